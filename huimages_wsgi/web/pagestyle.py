"""The browse pages' style sheet: one small CSS, inline in every page (its CSP allows it)."""

STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f2;color:#222}
header{background:#263238;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;
 align-items:baseline;flex-wrap:wrap}
header a{color:#fff}header h1{font-size:1.2em;margin:0}
main{padding:1em 1.2em}a{color:#1565c0}
.grid{display:flex;flex-wrap:wrap;gap:12px;list-style:none;padding:0;margin:0}
.grid li{width:150px;background:#fff;box-shadow:0 1px 3px #0002}
.grid img{display:block;width:150px;height:150px}
.grid span{display:block;padding:4px 6px;font-size:12px;white-space:nowrap;overflow:hidden;
 text-overflow:ellipsis}
form{background:#fff;padding:.8em 1em;margin-bottom:1.2em;display:flex;gap:.8em;
 flex-wrap:wrap;align-items:center;box-shadow:0 1px 3px #0002}
nav.pager{display:flex;gap:1.2em;margin:.8em 0}
.detail img{max-width:100%;height:auto;background:#fff;box-shadow:0 1px 3px #0002}
.error{background:#ffebee;border-left:4px solid #c62828;padding:.6em 1em;margin-bottom:1em}
.note{color:#555}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
dd{margin:0}
"""

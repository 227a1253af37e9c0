"""The webservers' half of format by Accept (HUIMAGES_AUTO_FORMAT): the rules that make
a hit of a ``.jpeg`` variant URL the same choice the app makes for a miss.

Usage (webconfig.render_config fills the ``${auto_format}`` of each template)::

    auto_format_rules("nginx", ("avif", "webp"), target)   # maps for the variant location
    auto_format_rules("nginx", (), target)                 # the plain maps: no choice

The app (``web.middleware.ImageMiddleware.negotiated``) answers a ``.jpeg``
variant URL in the first of the formats whose type the client's ``Accept``
names. The webserver does the same from the cache: it serves
``<size>/<ID>.<that format>`` when the file is there, and hands the request
to the app otherwise (never the ``.jpeg`` file instead: the answer to one
``Accept`` is the same whoever gives it). Every ``.jpeg`` variant answer says
``Vary: Accept`` (lighttpd: every variant's, since its conditions see the
URL after the rewrite). Originals (``o/``) are never negotiated.
"""

from __future__ import annotations

#: A variant (never ``o/``) at the ``.jpeg`` extension, canonical or SEO form.
_JPEG_VARIANT = r"^/((?!o/)[^/?]+)/([A-Z0-9]{34})(/[^/?]+)?\.jpeg"


def auto_format_rules(kind: str, formats: tuple[str, ...], fcgi_target: str) -> str:
    """The template text of ``${auto_format}`` for ``kind``; ``formats`` () for none."""
    return {"nginx": _nginx, "lighttpd": _lighttpd, "apache": _apache}[kind](
        formats, fcgi_target)


def _nginx(formats: tuple[str, ...], _target: str) -> str:
    if not formats:
        return ("    map $huimages_ext $huimages_served_ext { default $huimages_ext; }\n"
                '    map $huimages_ext $huimages_vary { default ""; }\n'
                '    map $uri $huimages_internal_vary { default ""; }')
    accepted = "\n".join(f'        "~*image/{ext}" {ext};' for ext in formats)
    return (
        "    map $http_accept $huimages_accepted_ext {\n"
        "        default jpeg;\n"
        f"{accepted}\n"
        "    }\n"
        "    map $huimages_ext $huimages_served_ext {\n"
        "        jpeg $huimages_accepted_ext;\n"
        "        default $huimages_ext;\n"
        "    }\n"
        '    map $huimages_ext $huimages_vary { jpeg Accept; default ""; }\n'
        "    # an answer the app sends through X-Accel-Redirect (nginx keeps no Vary of it)\n"
        "    map $uri $huimages_internal_vary { default Accept; }")


def _lighttpd(formats: tuple[str, ...], _target: str) -> str:
    if not formats:
        return ""
    lines = ["# a .jpeg variant in the first format the client's Accept names",
             "# (HUIMAGES_AUTO_FORMAT): that format's file, or the app when it is missing"]
    for depth, ext in enumerate(formats):  # each next one only where none before is named
        pad = "    " * depth
        lines += [f'{pad}$REQUEST_HEADER["Accept"] =~ "(?i)image/{ext}" {{',
                  f'{pad}    url.rewrite-repeat = ( "{_JPEG_VARIANT}(\\?.*)?$"'
                  f' => "/$1/$2.{ext}$4" )',
                  f"{pad}}}"]
        if depth < len(formats) - 1:
            lines.append(f'{pad}$REQUEST_HEADER["Accept"] !~ "(?i)image/{ext}" {{')
    for level in reversed(range(len(formats) - 1)):
        lines.append("    " * level + "}")
    lines += ['$HTTP["url"] =~ "^/(?!o/)[^/]+/[A-Z0-9]{34}(/[^/]+)?\\.(jpeg|avif|webp)$" {',
              '    setenv.set-response-header = ( "Vary" => "Accept" )',
              "}"]
    return "\n".join(lines)


def _apache(formats: tuple[str, ...], target: str) -> str:
    if not formats:
        return ""
    lines = ["# a .jpeg variant in the first format the client's Accept names",
             "# (HUIMAGES_AUTO_FORMAT): that format's file, or the app when it is missing",
             f'SetEnvIf Request_URI "{_JPEG_VARIANT}$" HUIMAGES_VARY=1']
    seo = _JPEG_VARIANT.replace("(/[^/?]+)?", "/[^/?]+")  # an SEO name: its Link too
    for ext in formats:
        for pattern, flags in ((seo, ",E=HUIMAGES_CANONICAL:/$1/$2.jpeg"), (_JPEG_VARIANT, "")):
            lines += [f'RewriteCond "%{{HTTP:Accept}}" "image/{ext}" [NC]',
                      f'RewriteCond "%{{DOCUMENT_ROOT}}/$1/$2.{ext}" -f',
                      f'RewriteRule "{pattern}$" "/$1/$2.{ext}" [L{flags}]']
        lines += [f'RewriteCond "%{{HTTP:Accept}}" "image/{ext}" [NC]',
                  f'RewriteRule "{_JPEG_VARIANT}$" "{target}/" [P,L]']
    return "\n".join(lines)

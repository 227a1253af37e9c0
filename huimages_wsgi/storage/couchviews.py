"""The CouchDB catalog's design documents: the views it queries, each with its version.

``_design/huimages`` holds ``live`` (IDs of live images) and ``recent`` (by
ctime); ``_design/huimages_terms`` the ``terms`` view that finds images by
reference, type and tag (storage.base.search_terms in JavaScript), in a
document of its own, so adding it rebuilt neither of the others' views.
"""

DESIGN_ID = "_design/huimages"
DESIGN_VERSION = 1
#: storage.base.search_terms in JavaScript: [kind, name, value, ctime] of a live image;
#: a design document of its own, so adding it rebuilds neither of the others' views.
_TERMS_MAP = """function (doc) {
  if (doc.deleted || doc._id.charAt(0) === '_') { return; }
  var seen = {}, when = doc.ctime || '', refs = doc.references || {};
  function term(kind, name, values) {
    values = Array.isArray(values) ? values : [values];
    for (var i = 0; i < values.length; i++) {
      var key = [kind, name, String(values[i])], id = JSON.stringify(key);
      if (values[i] !== null && values[i] !== undefined && values[i] !== '' && !seen[id]) {
        seen[id] = 1; emit(key.concat([when]), null);
      }
    }
  }
  if (typeof refs === 'object' && !Array.isArray(refs)) {
    for (var name in refs) { term('reference', name, refs[name]); }
  }
  if (Array.isArray(doc.types)) { term('type', '', doc.types); }
  if (Array.isArray(doc.tags)) { term('tag', '', doc.tags); }
}"""
DESIGN = {
    "version": DESIGN_VERSION,
    "language": "javascript",
    "views": {
        "live": {"map": "function (doc) { if (!doc.deleted) { emit(doc._id, null); } }"},
        "recent": {"map": "function (doc) { if (!doc.deleted) { emit(doc.ctime || '', null); } }"},
    },
}
TERMS_ID = "_design/huimages_terms"
TERMS = {"version": 1, "language": "javascript",
         "views": {"terms": {"map": _TERMS_MAP, "reduce": "_count"}}}

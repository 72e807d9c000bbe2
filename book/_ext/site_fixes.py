"""Small fixes to the generated pages.

sphinx-thebe and sphinx-togglebutton register their inline configuration scripts on every read phase, and
under Jupyter Book 1 / Sphinx 7 each page ends up with them twice (once with filename None, once with ''): the
second `const THEBE_JS_URL` is a script error in every browser. Scripts are de-duplicated per page by source
and attributes, keeping the first.
"""


def _key(script):
    filename = getattr(script, "filename", script) or ""
    attributes = getattr(script, "attributes", {}) or {}
    return str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items()))


def dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts:
        seen, unique = set(), []
        for script in scripts:
            if _key(script) not in seen:
                seen.add(_key(script))
                unique.append(script)
        context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=900)  # after every handler that adds scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}

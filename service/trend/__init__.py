"""The kidney trend view (issue #23): what a nephrologist draws by hand, from the same engine as the cards.

`model` builds the view's data from an assessment (pure); `chart` draws the eGFR chart as SVG geometry; `page` renders
the page (no script; a table beside every chart; `static/trend.css`). Not served yet: the SMART on FHIR launch that
will serve it, with the token kept on the server, is the next step of issue #23.
"""

"""The kidney trend view (issue #23): what a nephrologist draws by hand, from the same engine as the cards.

`model` builds the view's data from an assessment (pure; first step). The SMART on FHIR launch and the page follow.
"""

"""Template filter that lets Plotly's figures run under the Content-Security-Policy.

plotly.io.to_html writes each figure as a <div> and an inline <script> that calls
Plotly.newPlot. The policy (settings.CONTENT_SECURITY_POLICY) runs an inline script only
when it carries the response's nonce, so the figure HTML gets that nonce here, in the
template, where the request is known. Registered as a template builtin (settings.TEMPLATES).
"""

from __future__ import annotations

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

# The opening tag Plotly writes for its figure call (older releases add the type). Text from
# the data cannot forge one: Plotly's JSON escapes "<", ">" and "/" as \u003c, \u003e, \u002f
# (tests/test_csp.py holds it to that).
PLOTLY_SCRIPT_TAG = re.compile(r'<script(?: type="text/javascript")?>')


@register.filter
def plotly_nonce(figure_html: str, nonce: object) -> SafeString:
    """Figure HTML from plotly.io.to_html (trusted: built by apps/dashboard) with the CSP
    nonce on its inline script: `{{ chart.html|plotly_nonce:request.csp_nonce }}`."""
    return mark_safe(PLOTLY_SCRIPT_TAG.sub(f'<script nonce="{escape(str(nonce))}">', str(figure_html)))

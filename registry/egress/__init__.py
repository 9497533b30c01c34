"""The egress gate: every connection corral opens to another machine is decided here.

`gate.Egress` holds the one rule set (CORRAL_OFFLINE, CORRAL_UPSTREAM, CORRAL_ALLOWED_HOSTS),
checks every URL before a request and every hop of a redirect, and builds the only HTTP
sessions that leave the process; `resolver` repeats the address check when a name is resolved
for a connection; `addresses` says which IP addresses count as public.
"""

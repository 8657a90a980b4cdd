"""How flowseg carries a rule's place and a policy's identity in Flow-Spec routes.

Both commands use these numbers; they are the contract between fs-fetch and fs-inject.

- traffic-marking (RFC 8955 section 7.5, `(generic, 0x80090000, N)`): the slides' rule number.
  Only the 6-bit DSCP value is meaningful to an RFC receiver, and FRR shows one octet, so it
  carries rule numbers 1-63.
- route target `(rt, 65535, N)`: the rule's sequence number, for any N up to 2^32-1. FRR prints
  a 2-octet-AS route target exactly (`65535:N`, wire facts 3.3), in the same detail JSON as the
  match. AS 65535 is reserved (RFC 7300), so no real route target collides.
- route target `(rt, 65534, G)`: the policy's generation, on every route of that policy.
- route target `(rt, 65533, C)`: on the policy's catch-all route only: how many routes of
  generation G the receiving switch is sent, the catch-all included. A switch applies a
  generation only once it holds all C routes of it and no route of another generation.
- traffic-rate 0 (section 7.3, `(generic, 0x80060000, 0x0)`): DROP.
- any other route target: a scope (conclusion C of the seed talk): the route is meant for the
  switches of that scope only.
"""

from __future__ import annotations

SEQUENCE_AS = 65535
GENERATION_AS = 65534
COUNT_AS = 65533
RESERVED_AS = {SEQUENCE_AS, GENERATION_AS, COUNT_AS}
MARKING_MAX = 63
RT_VALUE_MAX = 2**32 - 1

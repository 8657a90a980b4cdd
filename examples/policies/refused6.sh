# IPv6 rules fs-fetch refuses (ip6tables arguments), each loaded alone.
-A FORWARD -m frag --fraglast -j DROP
-A FORWARD -m frag -j DROP
-A FORWARD -p ipv6-frag -j DROP
-A FORWARD -m frag ! --fragid 5 -j DROP

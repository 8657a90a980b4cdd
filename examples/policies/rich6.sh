# IPv6 part of the richer policy (ip6tables arguments, one invocation per line).
-P FORWARD DROP
-A FORWARD -s 2001:db8:1::/64 -d 2001:db8:2::10/128 -p tcp -m tcp --dport 80 -j ACCEPT
-A FORWARD -d 2001:db8:2::/64 -p udp -m multiport --dports 53,123 -j ACCEPT
-A FORWARD -p ipv6-icmp -j ACCEPT

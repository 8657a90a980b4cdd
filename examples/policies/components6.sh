# The IPv6 half of components.sh (ip6tables arguments, one invocation per line): h1
# 2001:db8:1::10 and h2 2001:db8:2::10.
-P FORWARD DROP
-A FORWARD -d 2001:db8:2::10/128 -p tcp -m tcp --dport 7001 --syn -j ACCEPT
-A FORWARD -d 2001:db8:2::10/128 -p tcp -m tcp ! --dport 22 -j ACCEPT
-A FORWARD -d 2001:db8:2::/64 -p udp -m multiport --ports 53,123 -m length --length 0:1280 -j ACCEPT
-A FORWARD -d 2001:db8:2::/64 -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT
-A FORWARD -d 2001:db8:2::/64 -p ipv6-icmp -m icmp6 --icmpv6-type 1/4 -j ACCEPT
-A FORWARD -d 2001:db8:2::/64 -p ipv6-icmp -m icmp6 ! --icmpv6-type 135 -j DROP
-A FORWARD -d 2001:db8:2::/64 -m dscp ! --dscp 0x0a -j DROP
-A FORWARD -d 2001:db8:2::/64 -m frag --fragfirst --fragmore -j DROP
-A FORWARD -d 2001:db8:2::/64 ! -p tcp -m comment --comment "not tcp" -j ACCEPT
-A FORWARD -d 2001:db8:2::/64 -p tcp -m tcp --dport 9 -j REJECT --reject-with tcp-reset

# Every match fs-fetch carries, for the lab's hosts h1 192.0.2.10 and h2 198.51.100.10
# (iptables arguments, one invocation per line). Used by tests/fixtures/capture_iptables.py and
# tests/lab/test_fetch_components.py. Each rule is its own Flow-Spec component test; order
# still matters (first match wins), so the DROP rules come before the broad ACCEPT rules.
-P FORWARD DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p tcp -m tcp --dport 7000 --tcp-flags SYN,ACK SYN,ACK -j DROP
-A FORWARD -d 198.51.100.10/32 -p tcp -m tcp --dport 7001 --syn -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p tcp -m tcp --dport 7002 --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE -j DROP
-A FORWARD -d 198.51.100.10/32 -p tcp -m tcp --sport :1023 --dport 7003 -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p tcp -m tcp --dport 7100: -j DROP
-A FORWARD -s 192.0.2.0/24 -d 198.51.100.10/32 -p tcp -m tcp ! --dport 22 -m comment --comment "all tcp but ssh" -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p udp -m multiport --ports 53,123,5000:5010 -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p udp -m multiport ! --dports 1:1023 -m length --length 1400:65535 -j DROP
-A FORWARD -d 198.51.100.10/32 -p icmp -m icmp --icmp-type 8 -m length ! --length 0:1000 -j DROP
-A FORWARD -d 198.51.100.10/32 -p icmp -m icmp --icmp-type echo-request -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p icmp -m icmp --icmp-type 3/4 -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p icmp -m icmp ! --icmp-type 0 -j DROP
-A FORWARD -d 198.51.100.0/24 -m dscp --dscp 0x2e -j ACCEPT
-A FORWARD -d 198.51.100.0/24 -m dscp --dscp-class AF41 -j ACCEPT
-A FORWARD -d 198.51.100.0/24 -m dscp ! --dscp 0x00 -j DROP
-A FORWARD -d 198.51.100.0/24 -f -j DROP
-A FORWARD -d 198.51.100.0/24 ! -f -p 47 -j ACCEPT
-A FORWARD -d 198.51.100.0/24 ! -p udp -m comment --comment "quote \" and backslash \\ stay inside the comment" -j DROP
-A FORWARD -d 198.51.100.0/24 -p udp -m udp --dport 9 -j REJECT --reject-with icmp-port-unreachable
-A FORWARD -d 198.51.100.0/24 -p sctp -m sctp --dport 9899 -j ACCEPT

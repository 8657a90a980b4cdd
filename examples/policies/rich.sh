# A richer controller policy for the lab's hosts: h1 192.0.2.10 (net 192.0.2.0/24) talks to
# h2 198.51.100.10 (net 198.51.100.0/24) through the switch. Order matters: DROP rules sit in
# front of broader ACCEPT rules. One iptables invocation per line (arguments only).
-P FORWARD DROP
-A FORWARD -s 192.0.2.0/24 -d 198.51.100.10/32 -p tcp -m tcp --dport 8080 -m comment --comment "no direct access to the admin port" -j DROP
-A FORWARD -s 192.0.2.0/24 -d 198.51.100.0/24 -p tcp -m tcp --dport 8000:8999 -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p tcp -m multiport --dports 22,80,443 -m comment --comment "ssh and web" -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p udp -m udp --dport 53 -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p udp -m udp --dport 5000:5010 -j DROP
-A FORWARD -s 192.0.2.10/32 -d 198.51.100.0/24 -p udp -m udp --dport 5000:6000 -j ACCEPT
-A FORWARD -s 192.0.2.10/32 -d 198.51.100.10/32 -p icmp -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p tcp -m tcp --sport 40000:40100 --dport 9000 -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p tcp -m multiport --dports 1001,1003,1005,1007,1009,1011,1013 -m comment --comment "seven ports: two routes for FRR" -j ACCEPT
-A FORWARD -s 192.0.2.0/24 -p 47 -j DROP

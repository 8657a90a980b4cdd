# Rules fs-fetch refuses since it can carry most matches (issue 3), one per line, each loaded
# alone into an empty FORWARD chain by tests/fixtures/capture_iptables.py.
-A FORWARD -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -j DROP
-A FORWARD -p icmp -m icmp ! --icmp-type 3/4 -j DROP
-A FORWARD -m conntrack --ctstate NEW -j ACCEPT
-A FORWARD -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -p tcp -m tcp --tcp-option 2 -j DROP
-A FORWARD -m ttl --ttl-lt 5 -j DROP
-A FORWARD -p udp -m udp --dport 22 -j LOG --log-prefix "ssh "

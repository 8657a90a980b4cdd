# Matches that real packets can show on the switch (fs-inject's packet test): TCP flags, packet
# length, DSCP and ICMP types, each DROP in front of a broader ACCEPT. h2 is 198.51.100.10.
-P FORWARD DROP
-A FORWARD -d 198.51.100.10/32 -p tcp -m tcp --dport 7000 --syn -j DROP
-A FORWARD -d 198.51.100.10/32 -p tcp -m tcp --dport 7001 --tcp-flags SYN,ACK ACK -j DROP
-A FORWARD -d 198.51.100.10/32 -p tcp -m tcp --dport 7000:7001 -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p udp -m udp --dport 7100 -m length --length 0:200 -j DROP
-A FORWARD -d 198.51.100.10/32 -p udp -m udp --dport 7101 -m length --length 1000:65535 -j DROP
-A FORWARD -d 198.51.100.10/32 -p udp -m udp --dport 7200 -m dscp --dscp 0x00 -j DROP
-A FORWARD -d 198.51.100.10/32 -p udp -m udp --dport 7201 -m dscp --dscp 0x2e -j DROP
-A FORWARD -d 198.51.100.10/32 -p udp -m udp --dport 7100:7201 -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p icmp -m icmp --icmp-type 13 -j DROP
-A FORWARD -d 198.51.100.10/32 -p icmp -j ACCEPT
-A FORWARD -d 198.51.100.10/32 -p udp -m udp ! --dport 7300 -j DROP
-A FORWARD -d 198.51.100.10/32 -p udp -j ACCEPT

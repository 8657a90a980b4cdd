# Rules fs-fetch must refuse, one per line, each loaded alone into an empty FORWARD chain
# to capture what iptables-save prints for it.
-A FORWARD -i eth0 -j ACCEPT
-A FORWARD -j LOG
-A FORWARD ! -s 192.0.2.0/24 -j DROP
-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 22 -j REJECT --reject-with tcp-reset
-A FORWARD -m mark --mark 0x1 -j ACCEPT
-A FORWARD -j RETURN

# The slides' controller policy: FORWARD policy DROP, one ACCEPT rule.
# Run by the lab and the demo as `iptables` arguments, one rule per line.
-P FORWARD DROP
-A FORWARD -s 2.0.0.1/32 -d 1.0.0.1/32 -j ACCEPT

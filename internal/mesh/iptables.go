package mesh

// TunnelPort is Istio's inbound tunnel (HBONE) port, 15008: Istio's
// iptables never intercepts it, and neither does `legate iptables`, so a
// pod's rules are the ones Istio would write.
const TunnelPort = 15008

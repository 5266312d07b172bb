#!/bin/sh
# The node-local server's network setup, once per node and idempotent: the dummy
# interface with the listen addresses, then the NOTRACK rules. Run by the DaemonSet's
# init container (image: Containerfile.node-local-setup) or by hand as root:
#
#   NODE_LOCAL_ADDRESSES="169.254.20.10 10.96.0.10" NODE_LOCAL_RULES=nft \
#       sh packaging/kubernetes/node-local/node-local-setup.sh
#
#   NODE_LOCAL_ADDRESSES  addresses for the interface (default 169.254.20.10); the same
#                         as the Corefile's `bind` and the rule files
#   NODE_LOCAL_INTERFACE  the dummy interface (default nodelocaldns)
#   NODE_LOCAL_RULES      nft (notrack.nft), iptables (notrack.rules) or none
#   NODE_LOCAL_LINK_TYPE  the interface's type (default dummy; a kernel built without
#                         the dummy driver can use bridge: one with no ports is as inert)
#
# It needs ip (iproute2) and nft or iptables-restore, and CAP_NET_ADMIN (CAP_NET_RAW
# too for iptables). The server itself never changes rules or addresses: what this
# script set up stays when the server restarts, is OOM-killed or is upgraded.
# To undo: ip link del nodelocaldns, and the removal lines of the rule file.
set -eu
here=$(dirname "$0")
addresses=${NODE_LOCAL_ADDRESSES:-169.254.20.10}
iface=${NODE_LOCAL_INTERFACE:-nodelocaldns}
rules=${NODE_LOCAL_RULES:-nft}
link_type=${NODE_LOCAL_LINK_TYPE:-dummy}

ip link show dev "$iface" >/dev/null 2>&1 || ip link add "$iface" type "$link_type"
for a in $addresses; do
    ip addr replace "$a/32" dev "$iface"
done
ip link set dev "$iface" up

case $rules in
nft)
    nft -f "$here/notrack.nft"
    ;;
iptables)
    for chain in PREROUTING OUTPUT; do
        while iptables -w -t raw -D "$chain" -j CLUSTERDNS-NODE-LOCAL 2>/dev/null; do :; done
    done
    iptables-restore -w --noflush <"$here/notrack.rules"
    ;;
none) ;;
*)
    echo "node-local-setup: NODE_LOCAL_RULES must be nft, iptables or none, not '$rules'" >&2
    exit 2
    ;;
esac
echo "node-local-setup: $iface has $addresses; rules: $rules"

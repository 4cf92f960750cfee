package model

import (
	"cmp"
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// ListenerSets (gateway.networking.k8s.io/v1): more listeners for a
// Gateway that allows them (spec.allowedListeners). The Gateway is
// treated as having the merged list of its own listeners then those of
// its ListenerSets, oldest first (then by namespace/name): a listener
// conflicting with one earlier in that list is not accepted.

// listenerSetsByGateway groups the ListenerSets by the Gateway their
// parentRef names, each list in precedence order.
func (b *builder) listenerSetsByGateway() map[types.NamespacedName][]*gatewayv1.ListenerSet {
	out := map[types.NamespacedName][]*gatewayv1.ListenerSet{}
	for _, ls := range b.objs.ListenerSets {
		pr := ls.Spec.ParentRef
		if (pr.Group != nil && *pr.Group != gatewayv1.GroupName) || (pr.Kind != nil && *pr.Kind != "Gateway") {
			continue
		}
		k := types.NamespacedName{Namespace: ls.Namespace, Name: string(pr.Name)}
		if pr.Namespace != nil && *pr.Namespace != "" {
			k.Namespace = string(*pr.Namespace)
		}
		out[k] = append(out[k], ls)
	}
	for _, sets := range out {
		slices.SortFunc(sets, func(a, c *gatewayv1.ListenerSet) int {
			if d := a.CreationTimestamp.Compare(c.CreationTimestamp.Time); d != 0 {
				return d
			}
			return cmp.Compare(a.Namespace+"/"+a.Name, c.Namespace+"/"+c.Name)
		})
	}
	return out
}

// allowsListenerSet reports whether a Gateway's spec.allowedListeners
// admits ListenerSets of namespace ns (default: none).
func (b *builder) allowsListenerSet(gw *gatewayv1.Gateway, ns string) bool {
	al := gw.Spec.AllowedListeners
	if al == nil || al.Namespaces == nil || al.Namespaces.From == nil {
		return false
	}
	switch *al.Namespaces.From {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSame:
		return ns == gw.Namespace
	case gatewayv1.NamespacesFromSelector:
		sel := al.Namespaces.Selector
		if sel == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return false
		}
		n := b.objs.Namespaces[types.NamespacedName{Name: ns}]
		return n != nil && s.Matches(labels.Set(n.Labels))
	}
	return false
}

// listenerOf is a ListenerSet entry as a Gateway listener.
func listenerOf(e gatewayv1.ListenerEntry) gatewayv1.Listener {
	return gatewayv1.Listener(e)
}

// gatewayListenerSets validates the listeners of the ListenerSets naming
// a Gateway (after its own), creates their model listeners and records
// the ListenerSets' status and the Gateway's attachedListenerSets.
func (b *builder) gatewayListenerSets(gw *gatewayv1.Gateway, sets []*gatewayv1.ListenerSet, addr string, pending bool, gs *gatewayState) {
	gwKey := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
	st := gs.status[gwKey]
	if gw.Spec.AllowedListeners != nil || len(sets) > 0 {
		st.AttachedListenerSets = ptrTo(int32(0))
	}
	// The listeners of higher precedence: the Gateway's, then the
	// accepted ones of the accepted ListenerSets before.
	earlier := slices.Clone(gw.Spec.Listeners)
	for _, set := range sets {
		key := types.NamespacedName{Namespace: set.Namespace, Name: set.Name}
		gen := set.Generation
		lst := &ListenerSetStatus{Key: key, Generation: gen}
		b.m.ListenerSets[key] = lst
		if !b.allowsListenerSet(gw, set.Namespace) {
			msg := fmt.Sprintf("Gateway %s/%s does not allow ListenerSets of namespace %s: see its spec.allowedListeners", gw.Namespace, gw.Name, set.Namespace)
			lst.Conditions = []metav1.Condition{cond("Accepted", false, "NotAllowed", msg, gen), cond("Programmed", false, "NotAllowed", msg, gen)}
			continue
		}
		// Sized once: each gwListener keeps a pointer to its status.
		lst.Listeners = make([]ListenerStatus, len(set.Spec.Listeners))
		var mine []*gwListener
		before := earlier
		earlier = slices.Clone(earlier)
		for i, e := range set.Spec.Listeners {
			spec := listenerOf(e)
			lst.Listeners[i].Name = string(e.Name)
			l := &gwListener{gw: gw, spec: spec, status: &lst.Listeners[i], set: set, ns: set.Namespace, gen: gen}
			mine = append(mine, l)
			if pending {
				l.pending = true
				l.status.Conditions = []metav1.Condition{cond("Accepted", true, "Accepted", "listener accepted", gen),
					cond("ResolvedRefs", true, "ResolvedRefs", "", gen),
					cond("Programmed", false, "Pending", "the Gateway has no address yet", gen),
					cond("Conflicted", false, "NoConflicts", "no conflicts", gen)}
			} else {
				b.gatewayListener(gw, earlier, l, addr, gs)
			}
			if condOf(l.status.Conditions, "Accepted") == "True/Accepted" {
				earlier = append(earlier, spec)
			}
		}
		valid, programmed := 0, 0
		for _, l := range mine {
			if l.valid || l.pending {
				valid++
			}
			if l.valid {
				programmed++
			}
		}
		if valid == 0 {
			earlier = before
			msg := "no listener is valid: see the listeners' conditions"
			lst.Conditions = []metav1.Condition{cond("Accepted", false, "ListenersNotValid", msg, gen), cond("Programmed", false, "ListenersNotValid", msg, gen)}
			continue
		}
		// Accepted: its listeners take part in the Gateway's and routes
		// may name it.
		accepted := cond("Accepted", true, "Accepted", "ListenerSet accepted", gen)
		if valid < len(mine) {
			accepted = cond("Accepted", true, "ListenersNotValid", "some listeners are invalid: see the listeners' conditions", gen)
		}
		prog := cond("Programmed", true, "Programmed", "ListenerSet programmed", gen)
		if programmed == 0 {
			prog = cond("Programmed", false, "ParentNotProgrammed", "the Gateway has no address yet", gen)
		}
		lst.Conditions = []metav1.Condition{accepted, prog}
		gs.listeners[gwKey] = append(gs.listeners[gwKey], mine...)
		gs.setParents[key] = gwKey
		*st.AttachedListenerSets++
	}
}

// listenerSetParent is the Gateway a ListenerSet's parentRef names.
func (b *builder) listenerSetParent(ls *gatewayv1.ListenerSet) types.NamespacedName {
	k := types.NamespacedName{Namespace: ls.Namespace, Name: string(ls.Spec.ParentRef.Name)}
	if ns := ls.Spec.ParentRef.Namespace; ns != nil && *ns != "" {
		k.Namespace = string(*ns)
	}
	return k
}

// condOf is the status and reason of the condition of type typ
// ("True/Accepted"), "-" when there is none.
func condOf(cs []metav1.Condition, typ string) string {
	for _, c := range cs {
		if c.Type == typ {
			return string(c.Status) + "/" + c.Reason
		}
	}
	return "-"
}

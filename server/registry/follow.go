package registry

import "context"

// OnNodesChanged installs the hook that hears which nodes' record,
// desired generation or confirms changed: mark gets their names after
// every committed transaction that wrote them (and, with FollowWrites,
// after another process's writes); reset is called when the store lost
// track of writes and any node may have changed. The rollout state
// machine (server/rollout) installs it once, before the registry is used,
// to look again only at nodes that changed. Both must return at once.
func (r *Registry) OnNodesChanged(mark func(names []string), reset func()) {
	r.marked, r.resync = mark, reset
}

// FollowWrites tells the OnNodesChanged hook about the nodes that other
// processes on the same store write (several servers on etcd: a confirm
// answered by another server), as this process's own writes are when
// they commit. A watcher resync (the store lost track of writes) calls
// its reset. It returns the stop.
func (r *Registry) FollowWrites() (stop func()) {
	var stops []func()
	for _, p := range []string{kNodes, kDesired, kConfirmed} {
		stops = append(stops, r.st.Watch(p, func(key string) {
			if name := nodeOfKey(key); name != "" {
				if r.marked != nil {
					r.marked([]string{name})
				}
			} else if r.resync != nil {
				r.resync()
			}
		}))
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}
}

// NodeChanges signals writes of node records (not routine reports, which
// only say a node is still there: seen.go).
func (r *Registry) NodeChanges(ctx context.Context) <-chan struct{} {
	return r.st.Changes(ctx, kNodes)
}

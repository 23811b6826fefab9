package etcdstore

import (
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Backoff of the watch's restarts.
const (
	watchRetryMin = 100 * time.Millisecond
	watchRetryMax = 5 * time.Second
)

// watch feeds the hub from one etcd watch on the store's keys, from
// revision next on, until Close. The client resumes a broken stream by
// itself; when the stream ends (etcd lost its leader, the revision to
// resume from was compacted, an error) it starts a new one from the
// revision after the last one seen. If revisions were compacted, writes
// may have been missed: every watcher is signalled.
func (s *Store) watch(next int64) {
	defer close(s.watchDone)
	log := s.cfg.Log.With().Str("component", "etcdstore").Logger()
	wait := watchRetryMin
	for s.ctx.Err() == nil {
		var progressed bool
		next, progressed = s.watchFrom(next)
		if s.ctx.Err() != nil {
			return
		}
		if progressed {
			wait = watchRetryMin
		}
		log.Warn().Int64("from_rev", next).Dur("retry_in", wait).Msg("etcd watch ended; restarting it")
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, watchRetryMax)
	}
}

// watchFrom runs one etcd watch from next until it ends, and returns the
// revision to resume from and whether it delivered anything.
func (s *Store) watchFrom(next int64) (int64, bool) {
	ctx := clientv3.WithRequireLeader(s.ctx)
	skip := len(s.dataKey(""))
	progressed := false
	for resp := range s.cli.Watch(ctx, s.dataKey(""), clientv3.WithPrefix(), clientv3.WithRev(next), clientv3.WithProgressNotify()) {
		if resp.CompactRevision > 0 {
			// etcd no longer has what happened since next: readers
			// must read again.
			s.cfg.Log.Warn().Str("component", "etcdstore").Int64("from_rev", next).Int64("compacted", resp.CompactRevision).
				Msg("etcd compacted revisions the watch had not seen; waking every watcher to re-read")
			next = resp.CompactRevision
			s.hub.SignalAll()
			return next, true
		}
		if resp.Err() != nil {
			return next, progressed
		}
		for _, ev := range resp.Events {
			s.hub.SignalAt(ev.Kv.ModRevision, string(ev.Kv.Key[skip:]))
			next = ev.Kv.ModRevision + 1
		}
		if resp.IsProgressNotify() && resp.Header.Revision >= next {
			next = resp.Header.Revision + 1
		}
		progressed = true
	}
	return next, progressed
}

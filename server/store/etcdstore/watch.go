package etcdstore

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/slipway-dev/slipway/server/store"
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
	progressed := false
	for resp := range s.cli.Watch(ctx, s.pre, clientv3.WithPrefix(), clientv3.WithRev(next), clientv3.WithProgressNotify()) {
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
			if key, ok := s.watchedKey(ev.Kv); ok {
				s.hub.SignalAt(ev.Kv.ModRevision, key)
			}
			next = ev.Kv.ModRevision + 1
		}
		if resp.IsProgressNotify() && resp.Header.Revision >= next {
			next = resp.Header.Revision + 1
		}
		progressed = true
	}
	return next, progressed
}

// watchedKey is the store key of a key the watch saw: a key stored as
// is, or an appended entry's presented key (its prefix's, if its base
// cannot be read); false for the store's own keys ("rev", "schema", …).
func (s *Store) watchedKey(kv *mvccKV) (string, bool) {
	key := string(kv.Key)
	if k, ok := strings.CutPrefix(key, s.dataKey("")); ok {
		return k, true
	}
	k, ok := strings.CutPrefix(key, s.appRoot())
	if !ok {
		return "", false
	}
	prefix, idx, ok := parseApp(k)
	if !ok {
		return "", false
	}
	cr := kv.CreateRevision
	if cr == 0 { // a delete: the event carries no create revision
		return prefix, true
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
	defer cancel()
	b, _, err := s.base(ctx, prefix, false)
	if err != nil {
		return prefix, true
	}
	return prefix + store.SeqKey(appended{cr: cr, idx: idx}.number(b)), true
}

package etcdstore

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/slipway-dev/slipway/server/store"
)

// Append ops without a counter key. An appended entry is stored under
// "app/<prefix>\x00<txn id>/<op index, 5 digits>", a key unique without a
// counter, and is presented as <prefix> + SeqKey(base + createRev*seqPerRev
// + op index): the etcd revision of the transaction that created it, which
// etcd allocates in commit order, so numbers rise in commit order, are never
// reused and need no read before the write. "seqbase/<prefix>" holds base,
// written once at the first such Append: the highest number a log of the
// earlier layout used (its "seq/<prefix>" counter, or its highest key), so
// that new numbers go on above it.

// seqPerRev caps the Append ops to one prefix in one transaction (a
// rollout wave appends one event per node), and seqIdxDigits is the length
// of the op index in a stored key. Numbers stay below 2^63 up to etcd
// revision 9*10^13.
const (
	seqPerRev    = 100_000
	seqIdxDigits = 5
)

// seqSep ends the prefix part of a stored appended key.
const seqSep = "\x00"

func (s *Store) appRoot() string                 { return s.pre + "app/" }
func (s *Store) appKey(prefix string) string     { return s.appRoot() + prefix + seqSep }
func (s *Store) seqBaseKey(prefix string) string { return s.pre + "seqbase/" + prefix }

// newTxnID returns a key part unique to one transaction of this process.
func (s *Store) newTxnID() string {
	return s.idBase + strconv.FormatUint(s.txnSeq.Add(1), 36) + "/"
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b) + "-"
}

// base returns prefix's base: ok false if it has none yet (and so no entry
// of this layout). With create set, it writes it first.
func (s *Store) base(ctx context.Context, prefix string, create bool) (int64, bool, error) {
	s.baseMu.Lock()
	b, ok := s.bases[prefix]
	s.baseMu.Unlock()
	if ok {
		return b, true, nil
	}
	key := s.seqBaseKey(prefix)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return 0, false, err
	}
	if len(resp.Kvs) == 0 && !create {
		return 0, false, nil
	}
	if len(resp.Kvs) == 0 {
		if resp, err = s.writeBase(ctx, prefix); err != nil {
			return 0, false, err
		}
	}
	if b, err = strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64); err != nil {
		return 0, false, fmt.Errorf("corrupt store: %s holds %q", key, resp.Kvs[0].Value)
	}
	s.baseMu.Lock()
	s.bases[prefix] = b
	s.baseMu.Unlock()
	return b, true, nil
}

// writeBase writes prefix's base unless another process did, and returns
// a read of it.
func (s *Store) writeBase(ctx context.Context, prefix string) (*clientv3.GetResponse, error) {
	old, err := s.oldSeq(ctx, prefix)
	if err != nil {
		return nil, err
	}
	key := s.seqBaseKey(prefix)
	tr, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version(key), "=", 0)).
		Then(clientv3.OpPut(key, strconv.FormatInt(old, 10))).Commit()
	if err != nil {
		return nil, err
	}
	s.observe(tr.Header)
	return s.cli.Get(ctx, key)
}

// oldSeq is the highest number the earlier layout used under prefix: its
// counter, or its highest key.
func (s *Store) oldSeq(ctx context.Context, prefix string) (int64, error) {
	resp, err := s.cli.Get(ctx, s.seqKey(prefix))
	if err != nil {
		return 0, err
	}
	var n int64
	if len(resp.Kvs) > 0 {
		if n, err = strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64); err != nil {
			return 0, fmt.Errorf("corrupt store: sequence of %q: %q", prefix, resp.Kvs[0].Value)
		}
	}
	last, err := s.lastSeqKey(ctx, prefix)
	return max(n, last), err
}

// appended is one stored appended entry, with what presents it.
type appended struct {
	prefix string
	cr     int64 // create revision
	idx    int64 // op index
	e      store.Entry
}

func (a appended) number(base int64) int64 { return base + a.cr*seqPerRev + a.idx }

// parseApp splits a stored appended key (after appRoot).
func parseApp(key string) (prefix string, idx int64, ok bool) {
	i := strings.LastIndex(key, seqSep)
	if i < 0 || len(key) < seqIdxDigits {
		return "", 0, false
	}
	n, err := strconv.ParseInt(key[len(key)-seqIdxDigits:], 10, 64)
	return key[:i], n, err == nil
}

// present gives every appended entry its presented key (they all belong
// to bases already known or read).
func (s *Store) present(ctx context.Context, as []appended) ([]store.Entry, error) {
	out := make([]store.Entry, 0, len(as))
	for _, a := range as {
		b, _, err := s.base(ctx, a.prefix, false)
		if err != nil {
			return nil, err
		}
		e := a.e
		e.Key = a.prefix + store.SeqKey(a.number(b))
		out = append(out, e)
	}
	return out, nil
}

// seqPrefixes are the Append prefixes whose presented keys may start with
// prefix but whose stored keys are not under appRoot+prefix: prefix
// without some of its trailing digits.
func seqPrefixes(prefix string) []string {
	var out []string
	for k := 1; k <= store.SeqDigits && k <= len(prefix); k++ {
		c := prefix[len(prefix)-k]
		if c < '0' || c > '9' {
			break
		}
		out = append(out, prefix[:len(prefix)-k])
	}
	return out
}

// listApp returns the appended entries presented under prefix from p.From
// on, in presented key order, at most p.Limit of them.
func (s *Store) listApp(ctx context.Context, prefix string, p store.Page) ([]store.Entry, error) {
	var as []appended
	// One Append prefix exactly: read by create revision from p.From.
	for _, sp := range append(seqPrefixes(prefix), prefix) {
		got, err := s.readSeq(ctx, sp, p)
		if err != nil {
			return nil, err
		}
		as = append(as, got...)
	}
	// Longer Append prefixes (none in the coordinator's use but for a
	// List of everything): found from their keys, then each read as one.
	longer, err := s.seqPrefixesUnder(ctx, prefix)
	if err != nil {
		return nil, err
	}
	for _, sp := range longer {
		got, err := s.readSeq(ctx, sp, p)
		if err != nil {
			return nil, err
		}
		as = append(as, got...)
	}
	es, err := s.present(ctx, as)
	if err != nil {
		return nil, err
	}
	es = slices.DeleteFunc(es, func(e store.Entry) bool { return !strings.HasPrefix(e.Key, prefix) || e.Key < p.From })
	slices.SortFunc(es, func(a, b store.Entry) int { return cmp.Compare(a.Key, b.Key) })
	if p.Limit > 0 && len(es) > p.Limit {
		es = es[:p.Limit]
	}
	return es, nil
}

// seqPrefixesUnder returns the Append prefixes longer than prefix that
// start with it and have entries (reading their keys).
func (s *Store) seqPrefixesUnder(ctx context.Context, prefix string) ([]string, error) {
	start := s.appRoot() + prefix + "\x01"
	resp, err := s.cli.Get(ctx, start, clientv3.WithRange(clientv3.GetPrefixRangeEnd(s.appRoot()+prefix)), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range s.toAppended(resp.Kvs, true) {
		if len(out) == 0 || out[len(out)-1] != a.prefix {
			out = append(out, a.prefix)
		}
	}
	return out, nil
}

func (s *Store) toAppended(kvs []*mvccKV, keysOnly bool) []appended {
	skip := len(s.appRoot())
	out := make([]appended, 0, len(kvs))
	for _, kv := range kvs {
		prefix, idx, ok := parseApp(string(kv.Key[skip:]))
		if !ok {
			continue
		}
		e := store.Entry{Rev: kv.ModRevision}
		if !keysOnly {
			e.Value = nonNil(kv.Value)
		}
		out = append(out, appended{prefix: prefix, cr: kv.CreateRevision, idx: idx, e: e})
	}
	return out
}

// readSeq reads prefix's appended entries numbered from p.From on, by
// create revision, at most p.Limit (plus the rest of the last
// transaction's, which the limit may have cut).
func (s *Store) readSeq(ctx context.Context, prefix string, p store.Page) ([]appended, error) {
	b, ok, err := s.base(ctx, prefix, false)
	if err != nil || !ok {
		return nil, err
	}
	minRev, skipped := int64(0), int64(0) // skipped: entries of minRev before From
	if strings.HasPrefix(p.From, prefix) {
		if n, ok := store.ParseSeq(p.From[len(prefix):]); ok && n > b {
			minRev, skipped = (n-b)/seqPerRev, (n-b)%seqPerRev
		}
	} else if p.From > prefix {
		return nil, nil
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMinCreateRev(minRev),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)}
	if p.KeysOnly {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	if p.Limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(p.Limit)+skipped))
	}
	resp, err := s.cli.Get(ctx, s.appKey(prefix), opts...)
	if err != nil {
		return nil, err
	}
	s.observe(resp.Header)
	kvs := resp.Kvs
	if resp.More && len(kvs) > 0 {
		last := kvs[len(kvs)-1].CreateRevision
		for len(kvs) > 0 && kvs[len(kvs)-1].CreateRevision == last {
			kvs = kvs[:len(kvs)-1]
		}
		opts[1], opts[len(opts)-1] = clientv3.WithMinCreateRev(last), clientv3.WithMaxCreateRev(last)
		r2, err := s.cli.Get(ctx, s.appKey(prefix), opts...)
		if err != nil {
			return nil, err
		}
		kvs = append(kvs, r2.Kvs...)
	}
	return s.toAppended(kvs, p.KeysOnly), nil
}

// storedKeys maps presented appended keys among keys to the etcd keys
// they are stored at (keys not appended, or no longer there, are left
// out).
func (s *Store) storedKeys(ctx context.Context, keys []string) (map[string]string, error) {
	type want struct {
		key, prefix string
		cr, idx     int64
	}
	var ws []want
	for _, k := range keys {
		if len(k) < store.SeqDigits {
			continue
		}
		prefix := k[:len(k)-store.SeqDigits]
		n, ok := store.ParseSeq(k[len(prefix):])
		if !ok {
			continue
		}
		b, ok, err := s.base(ctx, prefix, false)
		if err != nil {
			return nil, err
		}
		if ok && n > b {
			ws = append(ws, want{k, prefix, (n - b) / seqPerRev, (n - b) % seqPerRev})
		}
	}
	out := map[string]string{}
	for chunk := range slices.Chunk(ws, readBatch) {
		gets := make([]clientv3.Op, len(chunk))
		for i, w := range chunk {
			gets[i] = clientv3.OpGet(s.appKey(w.prefix), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
				clientv3.WithMinCreateRev(w.cr), clientv3.WithMaxCreateRev(w.cr))
		}
		resp, err := s.cli.Txn(ctx).Then(gets...).Commit()
		if err != nil {
			return nil, err
		}
		for i, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				if strings.HasSuffix(string(kv.Key), fmt.Sprintf("/%0*d", seqIdxDigits, chunk[i].idx)) {
					out[chunk[i].key] = string(kv.Key)
				}
			}
		}
	}
	return out, nil
}

// getApp reads the appended entry presented as key, if there is one.
func (s *Store) getApp(ctx context.Context, key string) (*clientv3.GetResponse, error) {
	stored, err := s.storedKeys(ctx, []string{key})
	if err != nil || stored[key] == "" {
		return &clientv3.GetResponse{}, err
	}
	return s.cli.Get(ctx, stored[key])
}

// checkPut refuses a Put of a key numbered like an Append prefix's entry
// above that prefix's base: it would be taken for an appended entry, out of
// commit order (a log copied into a prefix that already had one).
func (s *Store) checkPut(ctx context.Context, key string) error {
	if len(key) < store.SeqDigits {
		return nil
	}
	prefix := key[:len(key)-store.SeqDigits]
	n, ok := store.ParseSeq(key[len(prefix):])
	if !ok {
		return nil
	}
	b, ok, err := s.base(ctx, prefix, false)
	if err != nil || !ok || n <= b {
		return err
	}
	return fmt.Errorf("%q: numbered above %d, where the Append numbers of %q start: it would collide with them (copy a log only into an etcd prefix that never had one): %w",
		key, b, prefix, store.ErrInvalidKey)
}

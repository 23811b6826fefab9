package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/migrate"
	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/boltstore"
	"github.com/slipway-dev/slipway/server/store/etcdstore"
)

// MigrateCmd is `slipway-server migrate`.
func MigrateCmd(stdout, stderr io.Writer) *cobra.Command {
	var from, to, cfgPath, prefix string
	var force bool
	cmd := &cobra.Command{
		Use:   "migrate --from bolt:PATH|etcd:URL[,URL…] --to bolt:PATH|etcd:URL[,URL…]",
		Short: "Copy the server's whole state from one store to another (bbolt ⇄ etcd)",
		Long: `Copy every key of the server's state from one store to another, then check
that the target holds exactly the source's keys and values.

Stop the server first: a bbolt file in use is refused, and so is an etcd
prefix a server holds the lock of. The target must be empty; --force deletes
what it holds first. etcd's prefix, TLS files, user and password file and
timeouts are taken from [store] of the config file (--prefix overrides the
prefix); its endpoints from the argument.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, explicit := cfgPath, cfgPath != ""
			if !explicit {
				path = config.DefaultPath
			}
			c, err := config.Load(path, explicit)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("prefix") {
				c.Store.Prefix = prefix
			}
			return runMigrate(cmd.Context(), migration{from: from, to: to, force: force, store: c.Store, out: stdout, log: zerolog.New(stderr)})
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "source store: bolt:PATH or etcd:URL[,URL…]")
	f.StringVar(&to, "to", "", "target store: bolt:PATH or etcd:URL[,URL…]")
	f.BoolVar(&force, "force", false, "delete what the target holds before copying")
	f.StringVar(&cfgPath, "config", "", "config file whose [store] gives etcd's prefix, TLS and auth (default "+config.DefaultPath+" if present)")
	f.StringVar(&prefix, "prefix", config.DefaultStorePrefix, "etcd key prefix (overrides store.prefix)")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// migration is one run of migrate.
type migration struct {
	from, to string
	force    bool
	store    config.Store // etcd settings
	out      io.Writer
	log      zerolog.Logger
}

func runMigrate(ctx context.Context, m migration) error {
	if m.from == m.to {
		return fmt.Errorf("--from and --to are the same store (%s)", m.from)
	}
	src, closeSrc, err := m.open(ctx, "--from", m.from, true)
	if err != nil {
		return err
	}
	defer closeSrc()
	dst, closeDst, err := m.open(ctx, "--to", m.to, false)
	if err != nil {
		return err
	}
	defer closeDst()
	fmt.Fprintf(m.out, "migrating %s to %s\n", m.from, m.to)
	start := time.Now()
	res, err := migrate.Copy(ctx, src, dst, migrate.Options{Force: m.force, Progress: m.out})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	fmt.Fprintf(m.out, "done in %s: %d keys copied and verified", time.Since(start).Round(time.Millisecond), res.Keys)
	if res.Deleted > 0 {
		fmt.Fprintf(m.out, " (%d keys of the target deleted first)", res.Deleted)
	}
	fmt.Fprintf(m.out, "\n%s", res.Summary())
	return nil
}

// open opens the store spec names (flag is its flag, for errors). A
// source bbolt file must exist; an etcd store is locked for the copy, so
// that no server starts on it meanwhile.
func (m migration) open(ctx context.Context, flag, spec string, source bool) (store.Store, func(), error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch {
	case arg == "":
		return nil, nil, fmt.Errorf("%s: %q, want bolt:PATH or etcd:URL[,URL…]", flag, spec)
	case kind == config.StoreBolt:
		return openBolt(flag, arg, source)
	case kind == config.StoreEtcd:
		return m.openEtcd(ctx, flag, arg)
	}
	return nil, nil, fmt.Errorf("%s: %q: unknown store kind %q, want bolt or etcd", flag, spec, kind)
}

func openBolt(flag, path string, source bool) (store.Store, func(), error) {
	if _, err := os.Stat(path); source && err != nil {
		return nil, nil, fmt.Errorf("%s: %w", flag, err)
	}
	st, err := boltstore.Open(path, boltstore.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, boltstore.ErrLocked) {
			err = fmt.Errorf("%w; stop the server first", err)
		}
		return nil, nil, fmt.Errorf("%s: %w", flag, err)
	}
	return st, func() { st.Close() }, nil
}

func (m migration) openEtcd(ctx context.Context, flag, endpoints string) (store.Store, func(), error) {
	sc := m.store
	sc.Kind, sc.Endpoints = config.StoreEtcd, strings.Split(endpoints, ",")
	if err := sc.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", flag, err)
	}
	cfg, err := EtcdConfig(sc, m.log)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", flag, err)
	}
	st, err := etcdstore.Open(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", flag, err)
	}
	host, _ := os.Hostname()
	lock, err := st.Lock(ctx, fmt.Sprintf("slipway-server migrate on %s (pid %d)", host, os.Getpid()), time.Duration(sc.LeaseTTL))
	if err != nil {
		st.Close()
		return nil, nil, fmt.Errorf("%s: %w", flag, err)
	}
	if leader, err := st.Elector("", 0).Leader(ctx); err != nil || leader != "" {
		lock.Release()
		st.Close()
		if err == nil {
			err = fmt.Errorf("servers run on prefix %s (the leader: %s): stop them all first", cfg.Prefix, leader)
		}
		return nil, nil, fmt.Errorf("%s: %w", flag, err)
	}
	return st, func() { lock.Release(); st.Close() }, nil
}

package fleetsim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/atomicfile"
)

// Main is slipway-fleetsim's command line: parse flags, run, write the
// report.
func Main(ctx context.Context, args []string, stderr io.Writer) error {
	p, out, keep, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if p.SelfProfile != "" {
		stop, err := profileSelf(p.SelfProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if p.Dir == "" {
		if p.Dir, err = os.MkdirTemp("", "slipway-fleetsim-"); err != nil {
			return err
		}
		if !keep {
			defer os.RemoveAll(p.Dir)
		}
	}
	p.Log = stderr
	res, runErr := Run(ctx, p)
	var b strings.Builder
	if err := WriteReport(&b, res, meta()); err != nil {
		return err
	}
	if len(res.Fleets) > 0 {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		fmt.Fprintf(stderr, "fleetsim: report written to %s\n", out)
	}
	return runErr
}

func parseFlags(args []string, stderr io.Writer) (Params, string, bool, error) {
	var p Params
	fs := flag.NewFlagSet("slipway-fleetsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("sizes", "1000,10000", "fleet sizes, comma-separated, each on a fresh server")
	strategies := fs.String("strategies", api.StrategyAllAtOnce+","+api.StrategyRolling, "rollout strategies, in order")
	out := fs.String("out", "test/reports/fleet-bench.md", "report file")
	keep := fs.Bool("keep", false, "keep the work directory (server logs, state, profiles)")
	fs.StringVar(&p.SelfProfile, "self-profile", "", "write the simulator's own CPU profile of the whole run to this file")
	fs.StringVar(&p.ServerBin, "server", "", "slipway-server binary (test/cmd/slipway-server-pprof for profiles)")
	fs.BoolVar(&p.Pprof, "pprof", false, "the server binary serves pprof on $SLIPWAY_PPROF_LISTEN: take CPU profiles")
	fs.StringVar(&p.Dir, "dir", "", "work directory (default: a temporary one)")
	fs.IntVar(&p.Deploys, "deploys", 2, "deploys per strategy")
	fs.IntVar(&p.RollingPercent, "rolling-percent", 10, "rolling batch size, percent of the fleet")
	fs.DurationVar(&p.IdleWindow, "idle", 60e9, "idle CPU window (rounded to the nearest whole number of -poll-wait, when at least one)")
	fs.DurationVar(&p.Settle, "settle", 10e9, "pause after enrolment and after each deploy")
	fs.DurationVar(&p.IdleDelay, "idle-delay", 100e9, "quiet time before each idle window, from the end of enrolment or the last deploy (the keep-alive timeout is 90s)")
	fs.DurationVar(&p.DeployTimeout, "deploy-timeout", 300e9, "give up on a deploy after this")
	fs.DurationVar(&p.EnrolTimeout, "enrol-timeout", 600e9, "give up on enrolment after this")
	fs.DurationVar(&p.ProfileTime, "profile", 20e9, "CPU profile length from the first deploy of each strategy (0: none)")
	fs.IntVar(&p.StatusSamples, "status-samples", 3, "GET /v1/nodes samples per idle measurement")
	fs.IntVar(&p.MaxConns, "max-conns", 0, "connections to the server (0: two per agent within the file limit)")
	fs.IntVar(&p.WriteLimit, "write-limit", 0, "the server's agent_write_limit (0: its default)")
	fs.DurationVar(&p.Agent.SwitchTime, "switch-time", 2e9, "simulated switch: pull to confirm phase")
	fs.Float64Var(&p.Agent.FailureRate, "failure-rate", 0, "probability that a simulated switch fails its health checks")
	fs.DurationVar(&p.Agent.ReportInterval, "report-interval", 60e9, "agents' longest time between reports")
	fs.DurationVar(&p.Agent.PollWait, "poll-wait", api.DefaultPollWait, "agents' long-poll wait (the agent's default)")
	fs.DurationVar(&p.Agent.ConfirmInterval, "confirm-interval", 1e9, "agents' time between confirm requests")
	fs.DurationVar(&p.Agent.OverloadConfirmTimeout, "overload-confirm-timeout", 300e9, "agents' confirm bound while the server answers overloaded")
	if err := fs.Parse(args); err != nil {
		return p, "", false, err
	}
	if fs.NArg() > 0 {
		return p, "", false, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []error
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			errs = append(errs, fmt.Errorf("-sizes: %q is not a number", s))
			continue
		}
		p.Sizes = append(p.Sizes, n)
	}
	for _, s := range strings.Split(*strategies, ",") {
		s = strings.TrimSpace(s)
		if s != api.StrategyAllAtOnce && s != api.StrategyRolling {
			errs = append(errs, fmt.Errorf("-strategies: %q: want %s or %s", s, api.StrategyAllAtOnce, api.StrategyRolling))
			continue
		}
		p.Strategies = append(p.Strategies, s)
	}
	if p.ServerBin == "" {
		errs = append(errs, errors.New("-server: the slipway-server binary is required"))
	}
	return p, *out, *keep, errors.Join(errs...)
}

// meta names the tree and the machine.
func meta() Meta {
	commit := "unknown"
	if b, err := exec.Command("git", "describe", "--always", "--dirty", "--abbrev=12").Output(); err == nil {
		commit = strings.TrimSpace(string(b))
	}
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return Meta{Commit: commit, Host: fmt.Sprintf("host %s, %d CPUs (%s), kernel %s, %s", host, runtime.NumCPU(), cpuModel(), strings.TrimSpace(string(kernel)), runtime.Version())}
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown model"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown model"
}

// profileSelf starts a CPU profile of this process into path; stop ends it.
func profileSelf(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("-self-profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("-self-profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

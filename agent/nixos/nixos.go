// Package nixos is the agent's NixOS driver: it switches a node between
// prebuilt NixOS system closures (generations whose manifest has `nixos`).
//
//   - Realise copies the toplevel's closure from the release's substituters
//     into the local Nix store (`nix copy --from`), trusting only the
//     release's public keys and requiring signatures: an unsigned or wrongly
//     signed path is refused (Nix trusts content-addressed paths by their
//     hash; a NixOS toplevel is input-addressed).
//   - Test runs the toplevel's bin/switch-to-configuration test: the
//     running system switches, the boot default (the system profile and the
//     boot loader's default entry) does not. A node that reboots, or is
//     reset by a watchdog, comes back on the previous default.
//   - SetBootDefault makes a toplevel the boot default once its switch is
//     confirmed: the system profile set to it (`nix-env -p PROFILE --set`,
//     a new profile generation, unless the profile is on it already), then
//     its switch-to-configuration boot (or switch, which also activates it).
//   - Revert brings back an earlier profile generation: the one the profile
//     is on (the boot default never moved) with its switch-to-configuration
//     test; any other (`nix-env --switch-generation`) with its
//     switch-to-configuration switch, which makes it the boot default again.
//   - GC deletes old profile generations, keeping the newest K
//     (`nix-env --delete-generations +K`); Nix never deletes the current one.
//
// The node never evaluates Nix. Commands go through Runner, so tests can
// fake them; ExecRunner runs them for real.
package nixos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/slipway-dev/slipway/shared/generation"
)

// DefaultProfile is the NixOS system profile.
const DefaultProfile = "/nix/var/nix/profiles/system"

// Runner runs one command and returns its standard output. A failure's
// error carries the command's standard error.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// ExecRunner runs commands with os/exec. Env, when set, is added to the
// agent's environment.
type ExecRunner struct {
	Env []string
}

// Run runs name with args.
func (r ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if len(r.Env) > 0 {
		cmd.Env = append(os.Environ(), r.Env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 4000 {
			msg = "…" + msg[len(msg)-4000:]
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// Driver drives the Nix store and the system profile.
type Driver struct {
	// Profile is the system profile (default DefaultProfile).
	Profile string
	// Run runs commands (default ExecRunner{}).
	Run Runner
	// Nix, NixStore and NixEnv name the commands (default "nix",
	// "nix-store", "nix-env", looked up in PATH).
	Nix, NixStore, NixEnv string

	before func() // BeforeActivation's hook; nil: none
}

// Actions of switch-to-configuration the driver runs.
const (
	// ActionTest switches the running system; the boot default stays.
	ActionTest = "test"
	// ActionBoot makes the toplevel the boot loader's default; the running
	// system stays.
	ActionBoot = "boot"
	// ActionSwitch is boot and test.
	ActionSwitch = "switch"
)

// BeforeActivation makes the driver run f right before each
// switch-to-configuration it runs, after any move of the system profile:
// the agent's crash points between the two (tests only).
func (d *Driver) BeforeActivation(f func()) { d.before = f }

// Errors of the driver.
var (
	// ErrNoTrustedKeys: a closure that is not in the local store yet can only
	// be realised with the release's trusted public keys.
	ErrNoTrustedKeys = errors.New("nixos: no trusted public keys: refusing to fetch an unverifiable closure")
	// ErrNoSubstituters: the toplevel is not in the local store and the
	// release names no substituter.
	ErrNoSubstituters = errors.New("nixos: the toplevel is not in the local store and the release names no substituters")
	// ErrNotToplevel: the path has no bin/switch-to-configuration.
	ErrNotToplevel = errors.New("nixos: not a NixOS system toplevel (no bin/switch-to-configuration)")
	// ErrNoGeneration: the profile has no such generation.
	ErrNoGeneration = errors.New("nixos: no such profile generation")
	// ErrUntrusted: a substituter had the closure but not signed by a key
	// the release trusts. Retrying the same generation cannot help.
	ErrUntrusted = errors.New("not signed by a trusted public key of the release")
	// ErrNoNix: the Nix commands are not installed on this node.
	ErrNoNix = errors.New("nixos: this node has no Nix (nix, nix-store and nix-env must be in PATH): it cannot run generations with a NixOS toplevel")
)

var storePathRE = regexp.MustCompile(`^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+$`)

func (d *Driver) profile() string {
	if d.Profile != "" {
		return d.Profile
	}
	return DefaultProfile
}

func (d *Driver) runner() Runner {
	if d.Run != nil {
		return d.Run
	}
	return ExecRunner{}
}

func orDefault(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// noSubstituters keeps nix-store and nix-env from reaching out to the
// configured substituters (cache.nixos.org): Realise fetched everything.
var noSubstituters = []string{"--option", "substituters", ""}

// Available checks that the Nix commands exist (only for the default
// ExecRunner: a test's Runner is trusted).
func (d *Driver) Available() error {
	if d.Run != nil {
		return nil
	}
	for _, c := range []string{orDefault(d.Nix, "nix"), orDefault(d.NixStore, "nix-store"), orDefault(d.NixEnv, "nix-env")} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%w: %v", ErrNoNix, err)
		}
	}
	return nil
}

// Valid reports whether path is a valid path of the local store.
func (d *Driver) Valid(ctx context.Context, path string) bool {
	_, err := d.runner().Run(ctx, orDefault(d.NixStore, "nix-store"), "--check-validity", path)
	return err == nil
}

// Realise makes n.Toplevel and its closure valid in the local store,
// fetching it from n.Substituters in order and accepting only paths signed
// by one of n.TrustedPublicKeys. A toplevel already in the store is used as
// it is (the local store is trusted).
func (d *Driver) Realise(ctx context.Context, n generation.NixOS) error {
	top := n.Toplevel
	if !storePathRE.MatchString(top) {
		return fmt.Errorf("nixos: toplevel %q is not a /nix/store path", top)
	}
	if err := d.Available(); err != nil {
		return err
	}
	if !d.Valid(ctx, top) {
		if len(n.TrustedPublicKeys) == 0 {
			return fmt.Errorf("realise %s: %w", top, ErrNoTrustedKeys)
		}
		if len(n.Substituters) == 0 {
			return fmt.Errorf("realise %s: %w", top, ErrNoSubstituters)
		}
		var errs []error
		for _, sub := range n.Substituters {
			_, err := d.runner().Run(ctx, orDefault(d.Nix, "nix"),
				"--extra-experimental-features", "nix-command",
				"copy", "--from", sub,
				"--option", "trusted-public-keys", strings.Join(n.TrustedPublicKeys, " "),
				"--option", "require-sigs", "true",
				top)
			if err == nil {
				errs = nil
				break
			}
			errs = append(errs, fmt.Errorf("from %s: %w", sub, err))
		}
		if len(errs) > 0 {
			err := errors.Join(errs...)
			if msg := err.Error(); strings.Contains(msg, "lacks a") && strings.Contains(msg, "signature") { // "lacks a (valid) signature by a trusted key"
				return fmt.Errorf("nixos: realise %s: %w: %w", top, ErrUntrusted, err)
			}
			return fmt.Errorf("nixos: realise %s: %w", top, err)
		}
		if !d.Valid(ctx, top) {
			return fmt.Errorf("nixos: realise %s: not valid in the local store after the copy", top)
		}
	}
	if fi, err := os.Stat(filepath.Join(top, "bin", "switch-to-configuration")); err != nil || fi.IsDir() {
		return fmt.Errorf("%s: %w", top, ErrNotToplevel)
	}
	return nil
}

// Current returns the profile's current generation number and the store
// path it points to (0, "" for a profile that does not exist yet).
func (d *Driver) Current() (int, string, error) {
	link, err := os.Readlink(d.profile())
	if errors.Is(err, os.ErrNotExist) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("nixos: profile: %w", err)
	}
	n, ok := generationOf(d.profile(), link)
	if !ok {
		return 0, "", fmt.Errorf("nixos: profile %s points to %q, not a generation link", d.profile(), link)
	}
	target, err := d.target(n)
	return n, target, err
}

// Generations lists the profile's generation numbers, oldest first.
func (d *Driver) Generations() ([]int, error) {
	dir, base := filepath.Split(d.profile())
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nixos: profile: %w", err)
	}
	var gens []int
	for _, e := range entries {
		if n, ok := generationOf(base, e.Name()); ok {
			gens = append(gens, n)
		}
	}
	sort.Ints(gens)
	return gens, nil
}

// generationOf parses "<profile base>-<N>-link".
func generationOf(profile, link string) (int, bool) {
	s, ok := strings.CutPrefix(filepath.Base(link), filepath.Base(profile)+"-")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "-link")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n > 0
}

func (d *Driver) target(n int) (string, error) {
	link := fmt.Sprintf("%s-%d-link", d.profile(), n)
	t, err := os.Readlink(link)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: %d (%s)", ErrNoGeneration, n, d.profile())
	}
	if err != nil {
		return "", fmt.Errorf("nixos: %w", err)
	}
	return t, nil
}

// Test makes toplevel (already realised) the running system with its
// switch-to-configuration test. The system profile, and so the boot
// default, is not touched: SetBootDefault does that once the switch is
// confirmed.
func (d *Driver) Test(ctx context.Context, toplevel string) error {
	if !storePathRE.MatchString(toplevel) {
		return fmt.Errorf("nixos: toplevel %q is not a /nix/store path", toplevel)
	}
	if err := d.Available(); err != nil {
		return err
	}
	return d.activate(ctx, toplevel, ActionTest)
}

// SetBootDefault makes toplevel (already realised) the boot default: the
// system profile set to it (a new profile generation; none when the
// profile is on it already, so running it again after a crash adds
// nothing), then its switch-to-configuration action: ActionBoot, or
// ActionSwitch to make it the running system too.
func (d *Driver) SetBootDefault(ctx context.Context, toplevel, action string) error {
	if !storePathRE.MatchString(toplevel) {
		return fmt.Errorf("nixos: toplevel %q is not a /nix/store path", toplevel)
	}
	if action != ActionBoot && action != ActionSwitch {
		return fmt.Errorf("nixos: boot default: action %q is not %s or %s", action, ActionBoot, ActionSwitch)
	}
	if err := d.Available(); err != nil {
		return err
	}
	if _, cur, err := d.Current(); err != nil {
		return err
	} else if cur != toplevel {
		if err := d.setProfile(ctx, toplevel); err != nil {
			return err
		}
	}
	return d.activate(ctx, toplevel, action)
}

// setProfile points the system profile at toplevel: a new generation.
func (d *Driver) setProfile(ctx context.Context, toplevel string) error {
	if err := os.MkdirAll(filepath.Dir(d.profile()), 0o755); err != nil {
		return fmt.Errorf("nixos: %w", err)
	}
	args := append([]string{"-p", d.profile()}, noSubstituters...)
	if _, err := d.runner().Run(ctx, orDefault(d.NixEnv, "nix-env"), append(args, "--set", toplevel)...); err != nil {
		return fmt.Errorf("nixos: set profile to %s: %w", toplevel, err)
	}
	return nil
}

// Revert makes profile generation gen the running system again. When the
// profile is on gen (a switch never moved it: the boot default is
// unchanged) that is its switch-to-configuration test. Otherwise the
// profile is set back to gen (`nix-env --switch-generation`; gen 0: the
// generation before the current one, `--rollback`) and its
// switch-to-configuration switch makes it the boot default again.
func (d *Driver) Revert(ctx context.Context, gen int) error {
	if cur, target, err := d.Current(); err == nil && gen > 0 && cur == gen {
		return d.activate(ctx, target, ActionTest)
	}
	args := append([]string{"-p", d.profile()}, noSubstituters...)
	if gen > 0 {
		if _, err := d.target(gen); err != nil {
			return err
		}
		args = append(args, "--switch-generation", strconv.Itoa(gen))
	} else {
		args = append(args, "--rollback")
	}
	if _, err := d.runner().Run(ctx, orDefault(d.NixEnv, "nix-env"), args...); err != nil {
		return fmt.Errorf("nixos: revert profile: %w", err)
	}
	_, target, err := d.Current()
	if err != nil {
		return err
	}
	return d.activate(ctx, target, ActionSwitch)
}

// Restore makes n.Toplevel the running system again, the way a revert
// does: when the profile is on it (the boot default never moved), its
// switch-to-configuration test; else back to the newest profile
// generation that points at it (Revert: `nix-env --switch-generation`,
// switch-to-configuration switch). When GC removed every such generation,
// it realises the toplevel again (from the release's substituters,
// signatures checked) and makes it the boot default and the running
// system as a new profile generation.
func (d *Driver) Restore(ctx context.Context, n generation.NixOS) error {
	if cur, target, err := d.Current(); err == nil && cur > 0 && target == n.Toplevel {
		return d.activate(ctx, target, ActionTest)
	}
	gens, err := d.Generations()
	if err != nil {
		return err
	}
	for i := len(gens) - 1; i >= 0; i-- {
		if t, err := d.target(gens[i]); err == nil && t == n.Toplevel {
			return d.Revert(ctx, gens[i])
		}
	}
	if err := d.Realise(ctx, n); err != nil {
		return err
	}
	return d.SetBootDefault(ctx, n.Toplevel, ActionSwitch)
}

// activate runs toplevel's switch-to-configuration action, after the
// BeforeActivation hook.
func (d *Driver) activate(ctx context.Context, toplevel, action string) error {
	if d.before != nil {
		d.before()
	}
	stc := filepath.Join(toplevel, "bin", "switch-to-configuration")
	if _, err := d.runner().Run(ctx, stc, action); err != nil {
		return fmt.Errorf("nixos: %s %s: %w", toplevel, action, err)
	}
	return nil
}

// GC deletes profile generations but the newest keep (at least 1; Nix
// never deletes the current generation). The store paths they held become
// garbage for the Nix GC (nix-collect-garbage), which the agent does not
// run.
func (d *Driver) GC(ctx context.Context, keep int) error {
	if keep < 1 {
		keep = 1
	}
	gens, err := d.Generations()
	if err != nil || len(gens) <= keep {
		return err
	}
	args := append([]string{"-p", d.profile()}, noSubstituters...)
	if _, err := d.runner().Run(ctx, orDefault(d.NixEnv, "nix-env"), append(args, "--delete-generations", "+"+strconv.Itoa(keep))...); err != nil {
		return fmt.Errorf("nixos: gc: %w", err)
	}
	return nil
}

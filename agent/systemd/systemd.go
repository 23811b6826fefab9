// Package systemd is the agent's only door to systemd: it starts, stops and
// restarts units over D-Bus, waits for each job's result, reloads the
// manager and reads unit state. It is the only package importing go-systemd's
// dbus package.
//
// It never writes unit files and never decides what to switch; callers do.
package systemd

import (
	"context"
	"errors"
	"fmt"
	"strings"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// ErrJobFailed is returned (wrapped in *JobError) when a job ends with a
// result other than "done".
var ErrJobFailed = errors.New("systemd job failed")

// ErrNotLoaded is returned (wrapped, with systemd's message) by Stop when
// systemd refuses the stop because the unit is not loaded: D-Bus error
// org.freedesktop.systemd1.NoSuchUnit, "Unit x.service not loaded.".
// systemd answers so only for a unit whose load state is not-found, error
// or bad-setting and that is inactive: its file is gone, was never read,
// or does not parse, and nothing of it runs. Such a unit is already
// stopped; callers stopping it may count the stop as done. Every other
// stop failure (a job that fails or times out, access denied, a lost bus)
// is returned as it is.
var ErrNotLoaded = errors.New("unit not loaded")

// noSuchUnit is the D-Bus error name systemd uses for a unit it does not
// have loaded.
const noSuchUnit = "org.freedesktop.systemd1.NoSuchUnit"

// JobError reports a job that did not end in "done".
type JobError struct {
	Op     string // start, stop, restart, try-restart
	Unit   string
	Result string // failed, timeout, canceled, dependency, skipped
}

func (e *JobError) Error() string {
	return fmt.Sprintf("%s %s: job result %q", e.Op, e.Unit, e.Result)
}

// Unwrap returns ErrJobFailed.
func (e *JobError) Unwrap() error { return ErrJobFailed }

// Conn is a connection to the system manager.
type Conn struct {
	c *sdbus.Conn
}

// Dial connects to systemd: the private socket first (root, no dbus-daemon
// needed), then the system bus. The connection lives as long as ctx: end
// ctx (or call Close) to close it.
func Dial(ctx context.Context) (*Conn, error) {
	c, err := sdbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		var err2 error
		c, err2 = sdbus.NewSystemConnectionContext(ctx)
		if err2 != nil {
			return nil, fmt.Errorf("connect to systemd: %w (system bus: %v)", err, err2)
		}
	}
	return &Conn{c: c}, nil
}

// Close closes the connection.
func (c *Conn) Close() { c.c.Close() }

// Reload runs daemon-reload and returns when systemd has finished it.
func (c *Conn) Reload(ctx context.Context) error {
	if err := c.c.ReloadContext(ctx); err != nil {
		return fmt.Errorf("daemon-reload: %w", err)
	}
	return nil
}

// Start starts unit and waits for the job's result.
func (c *Conn) Start(ctx context.Context, unit string) error {
	return c.job(ctx, "start", unit, c.c.StartUnitContext)
}

// Stop stops unit and waits for the job's result. A unit systemd does not
// have loaded gives an error wrapping ErrNotLoaded.
func (c *Conn) Stop(ctx context.Context, unit string) error {
	return stopError(c.job(ctx, "stop", unit, c.c.StopUnitContext))
}

// stopError marks err, the error of a stop call, with ErrNotLoaded when
// systemd answered NoSuchUnit.
func stopError(err error) error {
	if isNoSuchUnit(err) {
		return fmt.Errorf("%w: %w", ErrNotLoaded, err)
	}
	return err
}

func isNoSuchUnit(err error) bool {
	var de dbus.Error
	return errors.As(err, &de) && de.Name == noSuchUnit
}

// Restart restarts unit (starting it if inactive) and waits.
func (c *Conn) Restart(ctx context.Context, unit string) error {
	return c.job(ctx, "restart", unit, c.c.RestartUnitContext)
}

// TryRestart restarts unit only if it is running, and waits.
func (c *Conn) TryRestart(ctx context.Context, unit string) error {
	return c.job(ctx, "try-restart", unit, c.c.TryRestartUnitContext)
}

// ResetFailed clears a unit's failed state; a unit that is not loaded is not
// an error.
func (c *Conn) ResetFailed(ctx context.Context, unit string) error {
	err := c.c.ResetFailedUnitContext(ctx, unit)
	if isNoSuchUnit(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reset-failed %s: %w", unit, err)
	}
	return nil
}

type jobFunc func(ctx context.Context, name, mode string, ch chan<- string) (int, error)

func (c *Conn) job(ctx context.Context, op, unit string, f jobFunc) error {
	ch := make(chan string, 1)
	if _, err := f(ctx, unit, "replace", ch); err != nil {
		return fmt.Errorf("%s %s: %w", op, unit, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return &JobError{Op: op, Unit: unit, Result: res}
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s %s: waiting for job: %w", op, unit, ctx.Err())
	}
}

// Status is the part of a unit's state the agent looks at.
type Status struct {
	Name         string
	LoadState    string // loaded, not-found, masked, error
	ActiveState  string // active, reloading, inactive, failed, activating, deactivating
	SubState     string
	FragmentPath string // the unit file systemd loaded
	InvocationID string // changes on every start
	// Service-only fields (empty/zero for other unit types).
	Type            string // simple, oneshot, notify, ...
	Result          string // success, exit-code, ...
	MainPID         uint32
	RemainAfterExit bool
	NRestarts       uint32
}

// Status reads a unit's state. A unit systemd does not know has LoadState
// "not-found" and no error.
func (c *Conn) Status(ctx context.Context, unit string) (Status, error) {
	p, err := c.c.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		return Status{}, fmt.Errorf("status %s: %w", unit, err)
	}
	s := Status{
		Name:         unit,
		LoadState:    str(p["LoadState"]),
		ActiveState:  str(p["ActiveState"]),
		SubState:     str(p["SubState"]),
		FragmentPath: str(p["FragmentPath"]),
	}
	if b, ok := p["InvocationID"].([]byte); ok && len(b) > 0 {
		s.InvocationID = fmt.Sprintf("%x", b)
	}
	if strings.HasSuffix(unit, ".service") && s.LoadState == "loaded" {
		sp, err := c.c.GetUnitTypePropertiesContext(ctx, unit, "Service")
		if err != nil {
			return Status{}, fmt.Errorf("status %s: %w", unit, err)
		}
		s.Type = str(sp["Type"])
		s.Result = str(sp["Result"])
		s.MainPID, _ = sp["MainPID"].(uint32)
		s.RemainAfterExit, _ = sp["RemainAfterExit"].(bool)
		s.NRestarts, _ = sp["NRestarts"].(uint32)
	} else if s.LoadState == "loaded" {
		// Result exists on sockets, timers, mounts and paths too.
		typ := strings.TrimPrefix(unitType(unit), ".")
		if typ != "target" {
			tp, err := c.c.GetUnitTypePropertiesContext(ctx, unit, strings.ToUpper(typ[:1])+typ[1:])
			if err == nil {
				s.Result = str(tp["Result"])
			}
		}
	}
	return s, nil
}

func unitType(unit string) string {
	if i := strings.LastIndexByte(unit, '.'); i >= 0 {
		return unit[i:]
	}
	return ""
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/server/analysis"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/humanize"
	"github.com/slipway-dev/slipway/shared/release"
	"github.com/slipway-dev/slipway/shared/selector"
)

// DeployPlan is what `deploy --dry-run --json` prints.
type DeployPlan struct {
	Name      string            `json:"name"`
	Manifest  string            `json:"manifest_id"`
	Target    string            `json:"target"` // normalised; "" = every node
	Strategy  api.Strategy      `json:"strategy"`
	Artifacts []PlannedArtifact `json:"artifacts"`
	Nodes     []string          `json:"nodes"` // the nodes the target selects now
	Diff      []NodeDiff        `json:"diff"`  // what the release changes on each of them
}

// PlannedArtifact is one artifact of a DeployPlan.
type PlannedArtifact struct {
	Name     string `json:"name"`
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
	Path     string `json:"path,omitempty"` // in the release directory
	URL      string `json:"url,omitempty"`  // fetched by the nodes themselves
	OnServer bool   `json:"on_server"`      // the server already has the blob
	Upload   bool   `json:"upload"`         // deploy would upload the blob
}

// deployOpts are deploy's flags.
type deployOpts struct {
	target         string
	targetSet      bool
	dryRun         bool
	queue          bool
	detach         bool
	untilPromotion bool
}

// deployCmd is `slipway deploy DIR`. Label selectors are "k=v,k2=v2":
// every term must match, spaces around terms are ignored, keys are unique,
// and an empty selector selects every node; deploy validates the selector
// locally and sends it normalised (terms sorted by key). It sends
// slipway.toml's [strategy] as is (durations as Go duration strings; the
// server checks the values) and then follows the rollout as `rollout
// watch` does, with its exit codes, unless --detach. `deploy --json`
// prints the Release, then, while following, the rollout's states as JSON
// lines (as `rollout watch --json`).
func (g *globals) deployCmd() *cobra.Command {
	var o deployOpts
	c := &cobra.Command{
		Use:   "deploy DIR",
		Short: "Upload a release directory's artifacts, publish it and follow its rollout",
		Long: `Deploy the release directory DIR.

The release is loaded and validated in full first. The target is --target,
else the target in slipway.toml, else every node; it must select at least
one enrolled node, or deploy fails before uploading anything (the server
refuses such a release too). Artifacts with a path
are uploaded to the server's blob store unless it already has them; then
the release is created with slipway.toml's [strategy], and the server
rolls it out to the target nodes wave by wave, each wave gated by the
health of its nodes.

deploy then follows the rollout as ` + "`slipway rollout watch`" + ` does and exits
with its status: 0 only when the rollout succeeds; 1 when it fails, is
reverted or aborted; 2 when it waits for promotion (a canary without an
analysis window), unless --until-promotion. Interrupting deploy does not
stop the rollout. With --detach deploy returns as soon as the rollout has
started, printing its ID.

Only one rollout runs per target group: while another is active, the
server refuses the release, unless --queue, which makes it wait its turn.

With --dry-run nothing is uploaded or created: deploy lists what it would
upload, which nodes the target selects now, and what the release would
change on each of them (as ` + "`slipway diff`" + `); it fails, after printing all
that, when the target selects no node.`,
		Example: `  slipway deploy ./web-release
  slipway deploy ./web-release --detach
  slipway deploy ./web-release --target role=web,env=staging --dry-run`,
		Args: exactArgs(1),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveFilterDirs
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.targetSet = cmd.Flags().Changed("target")
			return g.deploy(cmd.Context(), args[0], o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.target, "target", "", `label selector "k=v,k2=v2" (overrides slipway.toml; "" = every node)`)
	f.BoolVar(&o.dryRun, "dry-run", false, "validate and list what would be uploaded, targeted and changed; change nothing")
	f.BoolVar(&o.queue, "queue", false, "if another rollout is active for the same target group, wait for it instead of failing")
	f.BoolVar(&o.detach, "detach", false, "return once the rollout has started, without following it")
	f.BoolVar(&o.untilPromotion, "until-promotion", false, "keep following while the rollout waits for promotion, instead of exiting 2")
	return c
}

// apiStrategy is the rollout strategy of slipway.toml as the API takes it:
// durations as Go duration strings, zero ones left out.
func apiStrategy(s release.Strategy) api.Strategy {
	dur := func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		return d.String()
	}
	return api.Strategy{
		Kind:           s.Kind,
		MaxParallel:    s.MaxParallel,
		BatchSize:      s.BatchSize,
		MaxUnavailable: s.MaxUnavailable,
		Stagger:        dur(s.Stagger),
		Canary:         s.Canary,
		CanaryPercent:  s.CanaryPercent,
		Analysis:       dur(s.Analysis),
		NodeDeadline:   dur(s.NodeDeadline),
		Windows:        s.Windows,
		MaxFailures:    s.MaxFailures,
		AutoRevert:     s.AutoRevert,
		OnNodeDown:     s.OnNodeDown,
		AnalysisGates:  apiGates(s.Gates),
	}
}

func apiGates(gates []release.Gate) []api.AnalysisGate {
	var out []api.AnalysisGate
	for _, g := range gates {
		interval := ""
		if g.Interval != 0 {
			interval = g.Interval.String()
		}
		out = append(out, api.AnalysisGate{Name: g.Name, Query: g.Query, Condition: g.Condition, Scope: g.Scope, Aggregate: g.Aggregate,
			Interval: interval, Count: g.Count, FailureLimit: g.FailureLimit, ConsecutiveErrorLimit: g.ConsecutiveErrorLimit})
	}
	return out
}

// loadedRelease is a release directory ready to deploy or compare.
type loadedRelease struct {
	rel      *release.Release
	sel      selector.Selector
	from     string // where the target came from: slipway.toml or --target
	manifest []byte // canonical
	id       string
}

// loadRelease loads and validates dir and its target, before any request.
func loadRelease(dir, target string, targetSet bool) (*loadedRelease, error) {
	rel, err := release.Load(dir)
	if err != nil {
		return nil, err
	}
	if _, err := analysis.FromStrategy(apiGates(rel.Strategy.Gates)); err != nil {
		return nil, fmt.Errorf("release %s: slipway.toml: [[analysis]]: %w", dir, err)
	}
	tgt, from := rel.Target, "slipway.toml"
	if targetSet {
		tgt, from = target, "--target"
	}
	sel, err := selector.Parse(tgt)
	if err != nil {
		return nil, withHint(fmt.Errorf("target from %s: %w", from, err), selector.Hint)
	}
	manifest, err := rel.Manifest.Canonical()
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", dir, err)
	}
	id, err := rel.Manifest.ID()
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", dir, err)
	}
	return &loadedRelease{rel: rel, sel: sel, from: from, manifest: manifest, id: id}, nil
}

// blob is one local blob to upload: the artifacts naming it share it.
type blob struct {
	sha   string
	size  int64
	path  string // absolute
	names []string
}

func (b blob) label() string { return strings.Join(b.names, ", ") }

// localBlobs lists the blobs of rel's path artifacts, by artifact name.
func localBlobs(rel *release.Release) []*blob {
	var out []*blob
	bySHA := map[string]*blob{}
	for _, a := range sortedArtifacts(rel.Manifest) {
		p, ok := rel.Blobs[a.SHA256]
		if !ok {
			continue
		}
		if b := bySHA[a.SHA256]; b != nil {
			b.names = append(b.names, a.Name)
			continue
		}
		b := &blob{sha: a.SHA256, size: a.Size, path: p, names: []string{a.Name}}
		bySHA[a.SHA256] = b
		out = append(out, b)
	}
	return out
}

func sortedArtifacts(m *generation.Manifest) []generation.Artifact {
	arts := slices.Clone(m.Artifacts)
	slices.SortFunc(arts, func(a, b generation.Artifact) int { return strings.Compare(a.Name, b.Name) })
	return arts
}

func (g *globals) deploy(ctx context.Context, dir string, o deployOpts) error {
	lr, err := loadRelease(dir, o.target, o.targetSet)
	if err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	blobs := localBlobs(lr.rel)
	if o.dryRun {
		return g.deployPlan(ctx, c, lr, blobs)
	}
	if err := g.checkTarget(ctx, c, lr); err != nil {
		return err
	}
	for _, b := range blobs {
		if err := g.upload(ctx, c, b); err != nil {
			return err
		}
	}
	strategy := apiStrategy(lr.rel.Strategy)
	r, err := g.createRelease(ctx, c, lr, strategy, o.queue)
	if err != nil {
		return err
	}
	follow := !o.detach && r.Rollout != "" && len(r.Nodes) > 0
	if g.jsonOut {
		if err := g.writeJSON(r); err != nil || !follow {
			return err
		}
		return g.watch(ctx, c, r.Rollout, o.untilPromotion)
	}
	if err := g.printCreated(r, strategy); err != nil {
		return err
	}
	switch {
	case r.Rollout == "":
		fmt.Fprintln(g.stdout, "the server started no rollout; watch the nodes converge with `slipway status`")
		return nil
	case o.detach:
		fmt.Fprintf(g.stdout, "rollout %s started; follow it with `slipway rollout watch %s`\n", r.Rollout, r.Rollout)
		return nil
	}
	g.note("following rollout %s (interrupting stops the watching, not the rollout)", r.Rollout)
	return g.watch(ctx, c, r.Rollout, o.untilPromotion)
}

// checkTarget fails when lr's target selects no node, before anything is
// uploaded (the server checks again when it creates the release).
func (g *globals) checkTarget(ctx context.Context, c *api.Client, lr *loadedRelease) error {
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return g.apiError("list nodes", err, "")
	}
	if countSelected(nodes, lr.sel) == 0 {
		return noTargetError(lr, len(nodes), "nothing was uploaded and no release was created")
	}
	if len(lr.sel) == 0 {
		g.note("note: no target selector: the release goes to every node")
	}
	return nil
}

// createRelease asks the server for the release of lr; a conflict without
// the server's own hint gets one about the active rollouts and --queue.
func (g *globals) createRelease(ctx context.Context, c *api.Client, lr *loadedRelease, strategy api.Strategy, queue bool) (api.Release, error) {
	r, err := c.CreateRelease(ctx, api.CreateReleaseRequest{Name: lr.rel.Name, Target: lr.sel.String(), Manifest: lr.manifest, Strategy: &strategy, Queue: queue})
	var se *api.StatusError
	if errors.Is(err, api.ErrConflict) && !(errors.As(err, &se) && se.Body.Hint != "") {
		hint := "`slipway rollouts` shows the active rollouts"
		if !queue {
			hint += "; with --queue the release waits for the group's active rollout"
		}
		return r, withHint(fmt.Errorf("create release: %w", err), hint)
	}
	if err != nil {
		return r, g.apiError("create release", err, "")
	}
	if r.Nodes == nil {
		r.Nodes = []string{}
	}
	return r, nil
}

// printCreated prints the release the server created.
func (g *globals) printCreated(r api.Release, strategy api.Strategy) error {
	tw := newTable(g.stdout)
	fmt.Fprintf(tw, "release %s created\n", r.ID)
	fmt.Fprintf(tw, "  name:\t%s\n", r.Name)
	fmt.Fprintf(tw, "  manifest:\t%s\n", r.Manifest)
	fmt.Fprintf(tw, "  target:\t%s\n", targetString(r.Target))
	fmt.Fprintf(tw, "  nodes:\t%s\n", nodeList(r.Nodes))
	if r.Rollout != "" {
		fmt.Fprintf(tw, "  rollout:\t%s (%s)\n", r.Rollout, strategyString(strategy))
	}
	return tw.Flush()
}

// countSelected counts the nodes sel selects.
func countSelected(nodes []api.Node, sel selector.Selector) int {
	n := 0
	for _, node := range nodes {
		if sel.Matches(node.Labels) {
			n++
		}
	}
	return n
}

// noTargetError is deploy's error for a target that selects no node of
// the enrolled ones.
func noTargetError(lr *loadedRelease, enrolled int, what string) error {
	if enrolled == 0 {
		return withHint(fmt.Errorf("no node is enrolled, so the release has no target; %s", what),
			"`slipway token create` makes a join token for a new node")
	}
	return withHint(fmt.Errorf("target %q (from %s) selects none of the %s; %s", lr.sel.String(), lr.from, plural(enrolled, "enrolled node"), what),
		"`slipway nodes` lists the nodes and their labels; --target overrides the target of slipway.toml")
}

func targetString(sel string) string {
	if sel == "" {
		return "every node (no target selector)"
	}
	return sel
}

func nodeList(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d: %s", len(names), strings.Join(names, ", "))
}

// upload puts b into the server's blob store unless it is there already.
func (g *globals) upload(ctx context.Context, c *api.Client, b *blob) error {
	label, size := b.label(), humanize.Bytes(b.size)
	has, err := c.HasBlob(ctx, b.sha)
	if err != nil {
		return g.apiError("artifact "+label, err, "")
	}
	if has {
		g.note("artifact %s (%s): already on the server", label, size)
		return nil
	}
	f, err := os.Open(b.path)
	if err != nil {
		return fmt.Errorf("artifact %s: %w", label, err)
	}
	defer f.Close()
	pr := &progressReader{r: f, w: g.stderr, label: label, total: b.size, next: 10, enabled: b.size >= g.env.progressMin}
	if pr.enabled {
		g.note("artifact %s (%s): uploading", label, size)
	}
	start := g.env.now()
	err = c.PutBlob(ctx, b.sha, pr, b.size)
	pr.stop()
	if errors.Is(err, api.ErrInvalid) {
		return withHint(fmt.Errorf("upload artifact %s: %w", label, err),
			"the server checks size and sha256: did the file change since deploy read it? run deploy again")
	}
	if err != nil {
		return g.apiError("upload artifact "+label, err, "")
	}
	took := g.env.now().Sub(start)
	rate := ""
	if s := took.Seconds(); s > 0 && pr.enabled {
		rate = fmt.Sprintf(" (%s/s)", humanize.Bytes(int64(float64(b.size)/s)))
	}
	g.note("artifact %s (%s): uploaded in %s%s", label, size, tookString(took), rate)
	return nil
}

// tookString is "1.2s", or "45ms" below a second.
func tookString(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// errUploadOver is returned by a progressReader read after its upload ended
// (the HTTP transport may still read the body after the call returned).
var errUploadOver = errors.New("upload is over")

// progressReader counts the bytes read and prints a line every 10%.
type progressReader struct {
	r       io.Reader
	w       io.Writer
	label   string
	total   int64
	enabled bool

	mu   sync.Mutex
	read int64
	next int64 // the next percentage to print
	done bool
}

func (p *progressReader) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return 0, errUploadOver
	}
	n, err := p.r.Read(b)
	p.read += int64(n)
	if p.enabled && p.total > 0 {
		if pct := p.read * 100 / p.total; pct >= p.next {
			fmt.Fprintf(p.w, "  %s: %d%% (%s of %s)\n", p.label, pct/10*10, humanize.Bytes(p.read), humanize.Bytes(p.total))
			p.next = (pct/10 + 1) * 10
		}
	}
	return n, err
}

// stop ends the upload: later reads fail and print nothing.
func (p *progressReader) stop() {
	p.mu.Lock()
	p.done = true
	p.mu.Unlock()
}

// deployPlan prints what deploy would do, asking the server only which
// blobs it has, which nodes exist and their desired manifests.
func (g *globals) deployPlan(ctx context.Context, c *api.Client, lr *loadedRelease, blobs []*blob) error {
	rel, id, sel := lr.rel, lr.id, lr.sel
	onServer, err := g.blobsOnServer(ctx, c, blobs)
	if err != nil {
		return err
	}
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return g.apiError("list nodes", err, "")
	}
	slices.SortFunc(nodes, func(a, b api.Node) int { return strings.Compare(a.Name, b.Name) })
	plan := DeployPlan{Name: rel.Name, Manifest: id, Target: sel.String(), Strategy: apiStrategy(rel.Strategy), Artifacts: plannedArtifacts(rel, onServer), Nodes: []string{}}
	var matching []api.Node
	for _, n := range nodes {
		if sel.Matches(n.Labels) {
			matching = append(matching, n)
			plan.Nodes = append(plan.Nodes, n.Name)
		}
	}
	plan.Diff, err = g.nodeDiffs(ctx, c, rel.Manifest, id, matching)
	if err != nil {
		return err
	}
	if g.jsonOut {
		if err := g.writeJSON(plan); err != nil {
			return err
		}
		return g.planTarget(lr, nodes, matching)
	}
	if err := g.printPlan(plan, lr.from, nodes, matching); err != nil {
		return err
	}
	return g.planTarget(lr, nodes, matching)
}

// blobsOnServer asks the server which of blobs it has, by sha256.
func (g *globals) blobsOnServer(ctx context.Context, c *api.Client, blobs []*blob) (map[string]bool, error) {
	onServer := map[string]bool{}
	for _, b := range blobs {
		has, err := c.HasBlob(ctx, b.sha)
		if err != nil {
			return nil, g.apiError("artifact "+b.label(), err, "")
		}
		onServer[b.sha] = has
	}
	return onServer, nil
}

// plannedArtifacts lists rel's artifacts by name: a local file by its path
// in the release directory, uploaded unless onServer; else by its URL.
func plannedArtifacts(rel *release.Release, onServer map[string]bool) []PlannedArtifact {
	out := []PlannedArtifact{}
	for _, a := range sortedArtifacts(rel.Manifest) {
		pa := PlannedArtifact{Name: a.Name, SHA256: a.SHA256, Size: a.Size, URL: a.URL}
		if p, ok := rel.Blobs[a.SHA256]; ok {
			pa.URL = ""
			if r, err := filepath.Rel(rel.Dir, p); err == nil {
				pa.Path = filepath.ToSlash(r)
			}
			pa.OnServer = onServer[a.SHA256]
			pa.Upload = !pa.OnServer
		}
		out = append(out, pa)
	}
	return out
}

// printReleaseHead prints the release, manifest and target lines a dry
// run and a diff start with (from: where the target came from).
func printReleaseHead(tw io.Writer, name, manifest, target, from string) {
	fmt.Fprintf(tw, "release:\t%s\n", name)
	fmt.Fprintf(tw, "manifest:\t%s\n", manifest)
	if target == "" {
		fmt.Fprintf(tw, "target:\t%s\n", targetString(""))
	} else {
		fmt.Fprintf(tw, "target:\t%s (from %s)\n", target, from)
	}
}

// printPlan prints a dry run's plan: the release, its artifacts, the
// matching nodes and the changes per node.
func (g *globals) printPlan(plan DeployPlan, from string, nodes, matching []api.Node) error {
	w := g.stdout
	tw := newTable(w)
	printReleaseHead(tw, plan.Name, plan.Manifest, plan.Target, from)
	tw.Flush()
	printPlannedArtifacts(w, plan.Artifacts)
	fmt.Fprintf(w, "nodes: %d of %d match\n", len(matching), len(nodes))
	if len(matching) > 0 {
		tw = newTable(w)
		fmt.Fprintln(tw, "  NODE\tLABELS\tSTATE")
		for _, n := range matching {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", n.Name, humanize.Labels(n.Labels), n.State)
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "dry run: nothing was uploaded and no release was created")
	if len(plan.Diff) > 0 {
		fmt.Fprintf(w, "\nrollout: %s\n", strategyString(plan.Strategy))
		fmt.Fprintln(w, "changes per node:")
		return printNodeDiffs(w, plan.Diff)
	}
	return nil
}

// printPlannedArtifacts prints each artifact with its source and what
// deploy does with it.
func printPlannedArtifacts(w io.Writer, arts []PlannedArtifact) {
	if len(arts) == 0 {
		fmt.Fprintln(w, "artifacts: none")
		return
	}
	fmt.Fprintln(w, "artifacts:")
	tw := newTable(w)
	fmt.Fprintln(tw, "  NAME\tSIZE\tSOURCE\tACTION")
	for _, a := range arts {
		src, action := a.Path, "upload"
		switch {
		case a.URL != "":
			src, action = a.URL, "fetched by the nodes"
		case a.OnServer:
			action = "already on the server"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", a.Name, humanize.Bytes(a.Size), src, action)
	}
	tw.Flush()
}

// planTarget fails a dry run whose target selects no node: deploying it
// would be refused.
func (g *globals) planTarget(lr *loadedRelease, nodes, matching []api.Node) error {
	if len(matching) > 0 {
		return nil
	}
	return noTargetError(lr, len(nodes), "deploy would be refused")
}

package cli

// `slipway secret`: seal secrets to the nodes of a target, list the
// recipients, and rekey a release directory's secrets after nodes joined or
// left. Sealing and decrypting happen here, on the operator's machine, with
// shared/seal; the server only tells which nodes a target selects and their
// public age recipients (api.Node.AgeRecipient). No plaintext is sent
// anywhere.
//
// Decisions:
//   - These are the only commands that write locally: secrets/<NAME>.age in
//     the release directory (--dir, default "."), armored, written
//     atomically (a new file 0644, a rekeyed one keeps its mode). The age
//     files are the ones agenix and the age CLI read and write.
//   - Recipients are the target nodes' (--target; without it the `target`
//     of --dir's slipway.toml when it sets one, as deploy does), plus every
//     --recipient and --recipients-file (one recipient per line, "#"
//     comments, as age -R reads them). With no target (no --target, and no
//     slipway.toml or one without a `target` key), only the given
//     recipients are used and the server is not asked; `target = ""` (and
//     --target "") selects every node.
//   - Beside each secrets/NAME.age, secrets/NAME.recipients records whom it
//     is sealed to (see secret_record.go). rekey never drops a recipient
//     silently: one the new set lacks must be named by --drop-recipient (a
//     key or a node name), or the rekey changes nothing.
//   - A secret typed at a terminal is read without echo, up to Enter (no
//     newline is kept); from a pipe or --file it is read to the end, byte
//     for byte.
//   - A node's recipient is what its agent reported at enrolment: an age
//     X25519 recipient ("age1…"). A node may also carry an ssh-ed25519 (or
//     ssh-rsa) public key there (agents report only their age recipient;
//     the SSH form is accepted for nodes registered otherwise). A target
//     node without a usable recipient is an error naming it: a secret the
//     node cannot open would fail its switch.
//   - The plaintext (--file, else stdin) is sealed byte for byte, a
//     trailing newline included; an empty one is an error, and the armored
//     result must fit a manifest (generation.MaxSecretBytes).
//   - rekey opens every secrets/*.age with the --identity keys (age
//     identity files or SSH private keys) before it writes anything: one it
//     cannot open stops it, naming the file, and no file changes. It notes
//     when the new files are no longer sealed to any of those keys.
//   - Errors and output never show a plaintext or a private key.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"filippo.io/age"
	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/shared/atomicfile"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/humanize"
	"github.com/slipway-dev/slipway/shared/seal"
	"github.com/slipway-dev/slipway/shared/selector"
)

// RecipientRow is one recipient a secret is sealed to.
type RecipientRow struct {
	// Node is the node the recipient belongs to ("" for one given by flag).
	Node string `json:"node,omitempty"`
	// Source is "node", "--recipient" or "--recipients-file FILE".
	Source string `json:"source"`
	// Kind is X25519, ssh-ed25519 or ssh-rsa ("" when missing).
	Kind string `json:"kind,omitempty"`
	// Recipient is the canonical public key ("" when the node has none).
	Recipient string `json:"recipient"`
	// Problem says why the node's recipient cannot be used.
	Problem string `json:"problem,omitempty"`
}

// SealedSecret is what `secret encrypt --json` prints.
type SealedSecret struct {
	Name       string         `json:"name"`
	File       string         `json:"file"`
	Recipients []RecipientRow `json:"recipients"`
}

// Rekeyed is what `secret rekey --json` prints.
type Rekeyed struct {
	Files      []string       `json:"files"`
	Recipients []RecipientRow `json:"recipients"`
}

// recipientFlags are the flags that choose recipients.
type recipientFlags struct {
	dir        string
	target     string
	recipients []string
	files      []string
}

func (f *recipientFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.StringVar(&f.dir, "dir", ".", "release directory (its secrets/ holds the age files; its slipway.toml the default target)")
	fl.StringVar(&f.target, "target", "", `seal to the nodes this label selector selects ("k=v,k2=v2"; "" = every node); default: slipway.toml's target`)
	fl.StringArrayVar(&f.recipients, "recipient", nil, "also seal to this public key (age1… or ssh-ed25519 …), repeatable: e.g. your own, to rekey later")
	fl.StringArrayVar(&f.files, "recipients-file", nil, "also seal to the recipients in this file (one per line, # comments), repeatable")
}

const secretHint = "see `slipway secret --help`"

func (g *globals) secretCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "secret",
		Short: "Seal secrets to the target nodes' age recipients; list recipients; rekey a release's secrets",
		Long: `Seal secrets with age to the nodes that will decrypt them.

A secret is sealed on this machine to the age recipients of the nodes a
target selects (each agent reports its own at enrolment), plus any
--recipient you add, and written armored to secrets/NAME.age in the release
directory, where deploy picks it up. Only the target nodes (and your
recipients) can open it; the server stores and serves only the ciphertext.
Each node decrypts its secrets into /run/slipway/secrets/<generation>/NAME,
reachable as /run/slipway/secrets/current/NAME.

Files sealed with the age CLI or agenix (to a node's age recipient, or to its
SSH host key) work as they are.`,
		Example: `  printf %s "$DB_PASSWORD" | slipway secret encrypt db-password --dir ./web-release --target role=web --recipient "$(age-keygen -y ~/.config/slipway/admin.key)"
  slipway secret recipients --target role=web
  slipway secret rekey --dir ./web-release --identity ~/.config/slipway/admin.key --recipient age1…`,
	}
	c.AddCommand(g.secretEncryptCmd(), g.secretRecipientsCmd(), g.secretRekeyCmd())
	return c
}

func (g *globals) secretEncryptCmd() *cobra.Command {
	f := &recipientFlags{}
	var file string
	c := &cobra.Command{
		Use:   "encrypt NAME",
		Short: "Seal a secret (stdin or --file) to the target nodes and write secrets/NAME.age",
		Long: `Seal the secret read from --file, or else from stdin, byte for byte, to the
recipients of the target nodes and every --recipient, and write it armored to
secrets/NAME.age in --dir (replacing the file: that is how a secret is
rotated). NAME is letters, digits and ._-, starting with a letter or digit.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.secretEncrypt(cmd, args[0], file, f)
		},
	}
	f.register(c)
	c.Flags().StringVar(&file, "file", "", "read the secret from this file instead of stdin")
	return c
}

func (g *globals) secretRecipientsCmd() *cobra.Command {
	f := &recipientFlags{}
	c := &cobra.Command{
		Use:   "recipients",
		Short: "List the recipients secrets would be sealed to (the target nodes' and the given ones)",
		Long: `List the recipients ` + "`secret encrypt`" + ` and ` + "`secret rekey`" + ` would seal to with the same
flags. A target node without a usable recipient is listed, and makes the
command fail.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rows, _, err := g.recipients(cmd.Context(), cmd, f)
			if rows != nil {
				if g.jsonOut {
					if jerr := g.writeJSON(rows); jerr != nil {
						return jerr
					}
				} else if perr := printRecipients(g.stdout, rows); perr != nil {
					return perr
				}
			}
			return err
		},
	}
	f.register(c)
	return c
}

// dropFlags are rekey's consent to drop recipients.
type dropFlags struct {
	recipients []string // --drop-recipient: keys or node names
	unrecorded bool     // --drop-unrecorded
}

func (g *globals) secretRekeyCmd() *cobra.Command {
	f := &recipientFlags{}
	var identities []string
	drop := &dropFlags{}
	c := &cobra.Command{
		Use:   "rekey",
		Short: "Re-seal every secrets/*.age of a release directory to the current recipients (after nodes joined or left)",
		Long: `Open every secrets/*.age in --dir with the --identity keys and seal it again
to the recipients of the target nodes and every --recipient. All files are
opened before any is written: if one cannot be opened, none changes.

An --identity is an age identity file (AGE-SECRET-KEY-1… lines) or an
unencrypted SSH private key; the files must be sealed to one of them. Keep
your own recipient in the files (--recipient) to be able to rekey again.

A recipient a file is sealed to today (recorded in secrets/NAME.recipients,
or known from the file's header) that the new recipients lack is dropped
only when --drop-recipient names it (its key, or its node's name);
otherwise rekey names it and changes nothing. A file sealed outside slipway
(age, agenix) has no record: its X25519 recipients that no --identity opens
cannot be named, and are dropped only with --drop-unrecorded.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.secretRekey(cmd, identities, f, drop)
		},
	}
	f.register(c)
	c.Flags().StringArrayVar(&identities, "identity", nil, "identity that opens the current files (age identity file or SSH private key), repeatable; required")
	c.Flags().StringArrayVar(&drop.recipients, "drop-recipient", nil, "let the rekey drop this recipient (a public key, or a node name), repeatable")
	c.Flags().BoolVar(&drop.unrecorded, "drop-unrecorded", false, "let the rekey drop recipients of files without a secrets/NAME.recipients record that slipway cannot name")
	return c
}

// targetOf returns the selector to seal to: --target, else slipway.toml's
// target in dir. ok is false when there is neither.
func (g *globals) targetOf(cmd *cobra.Command, f *recipientFlags) (sel selector.Selector, from string, ok bool, err error) {
	tgt, from := f.target, "--target"
	if !cmd.Flags().Changed("target") {
		var cfg struct {
			Target *string `toml:"target"`
		}
		b, err := os.ReadFile(filepath.Join(f.dir, "slipway.toml"))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, "", false, nil
		case err != nil:
			return nil, "", false, err
		}
		if _, err := toml.Decode(string(b), &cfg); err != nil {
			return nil, "", false, fmt.Errorf("%s: %w", filepath.Join(f.dir, "slipway.toml"), err)
		}
		if cfg.Target == nil {
			// No target key: no nodes, as with no slipway.toml
			// (`target = ""` selects every node).
			return nil, "", false, nil
		}
		tgt, from = *cfg.Target, "slipway.toml"
	}
	sel, err = selector.Parse(tgt)
	if err != nil {
		return nil, "", false, withHint(fmt.Errorf("target from %s: %w", from, err), selector.Hint)
	}
	return sel, from, true, nil
}

// recipients resolves the recipients chosen by f. rows lists them all,
// usable or not; an error says why some cannot be used or none was chosen.
func (g *globals) recipients(ctx context.Context, cmd *cobra.Command, f *recipientFlags) ([]RecipientRow, []seal.Recipient, error) {
	sel, from, hasTarget, err := g.targetOf(cmd, f)
	if err != nil {
		return nil, nil, err
	}
	set := &recipientSet{rows: []RecipientRow{}, seen: map[string]bool{}}
	var missing []string
	if hasTarget {
		if missing, err = g.nodeRecipients(ctx, set, sel, from); err != nil {
			return nil, nil, err
		}
	}
	if err := flagRecipients(set, f); err != nil {
		return nil, nil, err
	}
	if len(missing) > 0 {
		return set.rows, nil, withHint(fmt.Errorf("node(s) %s: no usable age recipient; a secret sealed without them would fail their switch",
			strings.Join(missing, ", ")), "an agent reports its recipient when it enrols; `slipway-agent identity` on the node prints it (to pass with --recipient, with a --target that leaves the node out)")
	}
	if len(set.rs) == 0 {
		return nil, nil, withHint(errors.New("no recipients: nothing to seal to"),
			`give --target SELECTOR ("" = every node), or --dir with a slipway.toml, and/or --recipient / --recipients-file`)
	}
	return set.rows, set.rs, nil
}

// recipientSet gathers the rows of every recipient given and the distinct
// recipients among them.
type recipientSet struct {
	rows []RecipientRow
	rs   []seal.Recipient
	seen map[string]bool
}

func (s *recipientSet) add(row RecipientRow, r seal.Recipient) {
	row.Kind, row.Recipient = r.Kind(), r.String()
	s.rows = append(s.rows, row)
	if !s.seen[r.String()] {
		s.seen[r.String()] = true
		s.rs = append(s.rs, r)
	}
}

// nodeRecipients adds the recipient of each node sel matches and returns
// the nodes without a usable one; a selector matching no node is an error.
func (g *globals) nodeRecipients(ctx context.Context, set *recipientSet, sel selector.Selector, from string) ([]string, error) {
	if from == "slipway.toml" {
		g.note("target %s (from slipway.toml)", targetString(sel.String()))
	}
	nodes, err := g.listNodes(ctx)
	if err != nil {
		return nil, err
	}
	var missing []string
	matched := 0
	for _, n := range nodes {
		if !sel.Matches(n.Labels) {
			continue
		}
		matched++
		if n.AgeRecipient == "" {
			set.rows = append(set.rows, RecipientRow{Node: n.Name, Source: "node", Problem: "no age recipient (enrolled without one)"})
			missing = append(missing, n.Name)
			continue
		}
		r, err := seal.ParseRecipient(n.AgeRecipient)
		if err != nil {
			set.rows = append(set.rows, RecipientRow{Node: n.Name, Source: "node", Recipient: n.AgeRecipient, Problem: err.Error()})
			missing = append(missing, n.Name)
			continue
		}
		set.add(RecipientRow{Node: n.Name, Source: "node"}, r)
	}
	if matched == 0 {
		return nil, withHint(fmt.Errorf("target %s selects no node: nobody could decrypt the secret", targetString(sel.String())),
			"`slipway nodes` lists the nodes and their labels")
	}
	return missing, nil
}

// flagRecipients adds the recipients of --recipient and --recipients-file.
func flagRecipients(set *recipientSet, f *recipientFlags) error {
	for _, s := range f.recipients {
		r, err := seal.ParseRecipient(s)
		if err != nil {
			return withHint(fmt.Errorf("--recipient: %w", err), secretHint)
		}
		set.add(RecipientRow{Source: "--recipient"}, r)
	}
	for _, p := range f.files {
		fh, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("--recipients-file: %w", err)
		}
		list, err := seal.ParseRecipients(fh)
		fh.Close()
		if err != nil {
			return fmt.Errorf("--recipients-file %s: %w", p, err)
		}
		for _, r := range list {
			set.add(RecipientRow{Source: "--recipients-file " + p}, r)
		}
	}
	return nil
}

func printRecipients(w io.Writer, rows []RecipientRow) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NODE\tSOURCE\tKIND\tRECIPIENT")
	for _, r := range rows {
		rec := r.Recipient
		if r.Problem != "" {
			rec = "- (" + r.Problem + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", orDash(r.Node), r.Source, orDash(r.Kind), rec)
	}
	return tw.Flush()
}

func (g *globals) secretEncrypt(cmd *cobra.Command, name, file string, f *recipientFlags) error {
	if !generation.ValidName(name) {
		return withHint(fmt.Errorf("secret name %q: want 1 to 255 of letters, digits and ._-, starting with a letter or digit", name), secretHint)
	}
	if err := checkReleaseDir(f.dir); err != nil {
		return err
	}
	// The plaintext first: a bad input fails before the server is asked.
	plain, err := g.readPlain(cmd, name, file)
	defer clear(plain)
	if err != nil {
		return err
	}
	if len(plain) == 0 {
		return withHint(errors.New("the secret is empty"), "give it on stdin or with --file")
	}
	rows, rs, err := g.recipients(cmd.Context(), cmd, f)
	if err != nil {
		return err
	}
	sealed, err := seal.Encrypt(plain, rs...)
	if err != nil {
		return err
	}
	if len(sealed) > generation.MaxSecretBytes {
		return fmt.Errorf("secret %q: sealed and armored it is %s, over a manifest's limit of %s; ship large files as artifacts",
			name, humanize.Bytes(int64(len(sealed))), humanize.Bytes(generation.MaxSecretBytes))
	}
	rel := filepath.Join("secrets", name+".age")
	path := filepath.Join(f.dir, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	_, statErr := os.Lstat(path)
	if err := atomicfile.WriteFile(path, sealed, 0o644); err != nil {
		return err
	}
	if err := writeRecord(path, rows); err != nil {
		return err
	}
	if !slices.ContainsFunc(rows, func(r RecipientRow) bool { return r.Node != "" }) {
		g.note("note: no target (--target, or `target` in slipway.toml): sealed to the given recipients only; deploy sends a release without a target to every node")
	}
	if !slices.ContainsFunc(rows, func(r RecipientRow) bool { return r.Node == "" }) {
		g.note("note: only the nodes can open %s; seal to your own key too (--recipient) to be able to rekey it later", rel)
	}
	if g.jsonOut {
		return g.writeJSON(SealedSecret{Name: name, File: path, Recipients: rows})
	}
	verb := "sealed"
	if statErr == nil {
		verb = "sealed (replacing the file)"
	}
	fmt.Fprintf(g.stdout, "%s %s to %d recipient(s) → %s\n", verb, name, len(rs), path)
	return printRecipients(g.stdout, rows)
}

// readPlain reads the secret: from file, else from stdin; at a terminal
// without echo, up to Enter.
func (g *globals) readPlain(cmd *cobra.Command, name, file string) ([]byte, error) {
	if file != "" {
		return readLimited(file, generation.MaxSecretBytes)
	}
	in := cmd.InOrStdin()
	fd, ok := g.env.stdinTerminal(in)
	if !ok {
		return readAllLimited(in, generation.MaxSecretBytes, "stdin")
	}
	fmt.Fprintf(g.stderr, "secret %s (not shown as you type; end with Enter): ", name)
	plain, err := g.env.readPassword(cmd.Context(), fd)
	fmt.Fprintln(g.stderr)
	if err != nil {
		clear(plain)
		return nil, fmt.Errorf("read the secret from the terminal: %w", err)
	}
	if len(plain) > generation.MaxSecretBytes {
		clear(plain)
		return nil, fmt.Errorf("stdin: larger than %s, a secret's limit", humanize.Bytes(generation.MaxSecretBytes))
	}
	return plain, nil
}

func (g *globals) secretRekey(cmd *cobra.Command, identities []string, f *recipientFlags, drop *dropFlags) error {
	if len(identities) == 0 {
		return withHint(errors.New("rekey needs --identity: a key the current files are sealed to"),
			"an age identity file (age-keygen) or an SSH private key whose public key the files are sealed to")
	}
	if err := checkReleaseDir(f.dir); err != nil {
		return err
	}
	files, err := secretFiles(f.dir)
	if err != nil {
		return err
	}
	keys, err := readIdentities(identities)
	if err != nil {
		return err
	}
	ids := seal.Identities(keys)
	// Open every file before writing any.
	all, err := openSecrets(files, ids)
	defer func() {
		for _, o := range all {
			clear(o.plain)
		}
	}()
	if err != nil {
		return err
	}
	rows, rs, err := g.recipients(cmd.Context(), cmd, f)
	if err != nil {
		return err
	}
	if err := checkDrops(all, rs, keys, drop); err != nil {
		return err
	}
	sealed, err := resealSecrets(all, rs)
	if err != nil {
		return err
	}
	out, err := writeRekeyed(all, sealed, rows)
	if err != nil {
		return err
	}
	if _, err := seal.Decrypt(sealed[0], generation.MaxSecretBytes, ids...); err != nil {
		g.note("note: the --identity keys cannot open the rekeyed files any more; keep your own recipient (--recipient) to rekey again")
	}
	if g.jsonOut {
		return g.writeJSON(out)
	}
	fmt.Fprintf(g.stdout, "rekeyed %d file(s) to %d recipient(s):\n", len(out.Files), len(rs))
	for _, p := range out.Files {
		fmt.Fprintf(g.stdout, "  %s\n", p)
	}
	return printRecipients(g.stdout, rows)
}

// readIdentities reads the keys of every --identity file.
func readIdentities(identities []string) ([]seal.Key, error) {
	var keys []seal.Key
	for _, p := range identities {
		ks, err := seal.ReadKeys(p)
		if err != nil {
			return nil, fmt.Errorf("--identity: %w", err)
		}
		keys = append(keys, ks...)
	}
	return keys, nil
}

// openedSecret is a sealed secret file read and opened for rekeying.
type openedSecret struct {
	path  string
	data  []byte
	mode  os.FileMode
	plain []byte
}

// openSecrets reads and opens every file with ids. It returns the files
// opened so far with its error, for the caller to clear.
func openSecrets(files []string, ids []age.Identity) ([]openedSecret, error) {
	var all []openedSecret
	for _, p := range files {
		data, err := readLimited(p, generation.MaxSecretBytes)
		if err != nil {
			return all, err
		}
		fi, err := os.Stat(p)
		if err != nil {
			return all, err
		}
		plain, err := seal.Decrypt(data, generation.MaxSecretBytes, ids...)
		if err != nil {
			return all, withHint(fmt.Errorf("%s: %w (no file was changed)", p, err),
				"rekey needs a key the file is sealed to: seal your own recipient into the secrets (--recipient) so that you can rekey them")
		}
		all = append(all, openedSecret{path: p, data: data, mode: fi.Mode().Perm(), plain: plain})
	}
	return all, nil
}

// checkDrops fails when rekeying to rs would drop a recipient a file is
// sealed to without the --drop flags allowing it.
func checkDrops(all []openedSecret, rs []seal.Recipient, keys []seal.Key, drop *dropFlags) error {
	check := newDropCheck(rs, drop)
	for _, o := range all {
		held, err := heldBy(o.path, o.data, rs, keys)
		if err != nil {
			return err
		}
		check.file(o.path, held)
	}
	return check.err()
}

// resealSecrets seals every file's plaintext to rs, failing before any file
// is written when one would be over a manifest's limit.
func resealSecrets(all []openedSecret, rs []seal.Recipient) ([][]byte, error) {
	sealed := make([][]byte, len(all))
	for i, o := range all {
		var err error
		if sealed[i], err = seal.Encrypt(o.plain, rs...); err != nil {
			return nil, err
		}
		if len(sealed[i]) > generation.MaxSecretBytes {
			return nil, fmt.Errorf("%s: sealed to %d recipients it is %s, over a manifest's limit of %s (no file was changed)",
				o.path, len(rs), humanize.Bytes(int64(len(sealed[i]))), humanize.Bytes(generation.MaxSecretBytes))
		}
	}
	return sealed, nil
}

// writeRekeyed replaces each file with its resealed form and its record
// with rows; an error names the files already rekeyed.
func writeRekeyed(all []openedSecret, sealed [][]byte, rows []RecipientRow) (Rekeyed, error) {
	out := Rekeyed{Files: []string{}, Recipients: rows}
	for i, o := range all {
		if err := atomicfile.WriteFile(o.path, sealed[i], o.mode); err != nil {
			return out, fmt.Errorf("%w (files before it were rekeyed: %s)", err, strings.Join(out.Files, ", "))
		}
		if err := writeRecord(o.path, rows); err != nil {
			return out, fmt.Errorf("%w (%s was rekeyed, its record not)", err, o.path)
		}
		out.Files = append(out.Files, o.path)
	}
	return out, nil
}

// checkReleaseDir fails unless dir is a directory.
func checkReleaseDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return withHint(fmt.Errorf("--dir: %w", err), "--dir names the release directory (default the current one)")
	}
	if !fi.IsDir() {
		return withHint(fmt.Errorf("--dir %s: not a directory", dir), "--dir names the release directory (default the current one)")
	}
	return nil
}

// secretFiles lists dir/secrets/*.age (regular files; a symbolic link is an
// error, as for the release loader).
func secretFiles(dir string) ([]string, error) {
	sd := filepath.Join(dir, "secrets")
	ents, err := os.ReadDir(sd)
	if err != nil {
		return nil, fmt.Errorf("rekey: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".age") || e.IsDir() {
			continue
		}
		p := filepath.Join(sd, e.Name())
		if !e.Type().IsRegular() {
			return nil, fmt.Errorf("rekey: %s: not a regular file (symbolic links are not followed in secrets/)", p)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("rekey: no secrets/*.age in %s", dir)
	}
	sort.Strings(out)
	return out, nil
}

// readLimited reads a file of at most limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return readAllLimited(fh, limit, path)
}

func readAllLimited(r io.Reader, limit int64, what string) ([]byte, error) {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if n > limit {
		clear(buf.Bytes())
		return nil, fmt.Errorf("%s: larger than %s, a secret's limit", what, humanize.Bytes(limit))
	}
	return buf.Bytes(), nil
}

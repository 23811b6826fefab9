package cli

// The recipients record of a secret, secrets/NAME.recipients beside
// secrets/NAME.age, lets `secret rekey` see whom a file is sealed to: an age
// header does not name its X25519 recipients. encrypt and rekey write it;
// rekey refuses to drop a recipient it lists unless --drop-recipient names
// it. The record is in the age CLI's recipients-file format (`age -R` reads
// it); the "# " line before each recipient says whose it is. The release
// loader ignores it (it does not end in ".age").
//
// A file without a record (sealed with age or agenix) is checked against
// its header instead: an ssh-ed25519 or ssh-rsa stanza names its key by a
// tag, and an X25519 stanza is known when an --identity key opens it. A
// stanza known neither way counts as a recipient rekey would drop, unless
// --drop-unrecorded.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"filippo.io/age"
	"filippo.io/age/armor"
	"golang.org/x/crypto/ssh"

	"github.com/slipway-dev/slipway/shared/atomicfile"
	"github.com/slipway-dev/slipway/shared/seal"
)

// heldRecipient is a recipient a file is sealed to, with whose it is.
type heldRecipient struct {
	label     string // "node web-1", "--recipient", "--identity key"
	node      string // the node's name, for a node's recipient
	recipient string // canonical; "" for a stanza nobody can name
	kind      string
}

func (h heldRecipient) String() string {
	if h.recipient == "" {
		return "an unrecorded " + h.kind + " recipient"
	}
	if h.label == "" {
		return h.recipient
	}
	return fmt.Sprintf("%s (%s)", h.recipient, h.label)
}

// recordPath is the record of the age file at agePath.
func recordPath(agePath string) string {
	return strings.TrimSuffix(agePath, ".age") + ".recipients"
}

// writeRecord writes the record of agePath: the usable recipients of rows,
// once each.
func writeRecord(agePath string, rows []RecipientRow) error {
	var b bytes.Buffer
	b.WriteString("# The recipients " + agePath[strings.LastIndex(agePath, "/")+1:] +
		" is sealed to (age -R format), written by `slipway secret`;\n# `slipway secret rekey` refuses to drop one unless --drop-recipient names it.\n")
	seen := map[string]bool{}
	for _, r := range rows {
		if r.Problem != "" || r.Recipient == "" || seen[r.Recipient] {
			continue
		}
		seen[r.Recipient] = true
		label := r.Source
		if r.Node != "" {
			label = "node " + r.Node
		}
		fmt.Fprintf(&b, "# %s\n%s\n", label, r.Recipient)
	}
	return atomicfile.WriteFile(recordPath(agePath), b.Bytes(), 0o644)
}

// readRecord reads the record of agePath; ok is false when there is none.
func readRecord(agePath string) (held []heldRecipient, ok bool, err error) {
	p := recordPath(agePath)
	data, err := readLimited(p, 1<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), seal.MaxRecipientLen+1024)
	label := ""
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "#"):
			label = strings.TrimSpace(strings.TrimPrefix(line, "#"))
			continue
		}
		r, err := seal.ParseRecipient(line)
		if err != nil {
			return nil, false, fmt.Errorf("%s: line %d: %w", p, n, err)
		}
		h := heldRecipient{label: label, recipient: r.String(), kind: r.Kind()}
		if node, ok := strings.CutPrefix(label, "node "); ok {
			h.node = node
		}
		held = append(held, h)
		label = ""
	}
	return held, true, sc.Err()
}

// headerRecipients names the recipients of an age file without a record
// as far as its header allows: ssh stanzas by their key tag among
// candidates, X25519 stanzas by the keys that open them.
func headerRecipients(data []byte, candidates []seal.Recipient, keys []seal.Key) ([]heldRecipient, error) {
	stanzas, err := headerStanzas(data)
	if err != nil {
		return nil, err
	}
	tags := map[string]seal.Recipient{}
	for _, c := range candidates {
		if c.Kind() != seal.KindX25519 {
			if tag, err := sshTag(c.String()); err == nil {
				tags[c.Kind()+" "+tag] = c
			}
		}
	}
	var out []heldRecipient
	for _, s := range stanzas {
		h := heldRecipient{kind: s.Type}
		switch {
		case (s.Type == seal.KindSSHEd25519 || s.Type == seal.KindSSHRSA) && len(s.Args) > 0:
			if c, ok := tags[s.Type+" "+s.Args[0]]; ok {
				h.recipient = c.String()
			}
		case s.Type == seal.KindX25519:
			for _, k := range keys {
				if _, err := k.Identity.Unwrap([]*age.Stanza{s}); err == nil {
					h.recipient, h.label = k.Recipient, "--identity key"
					break
				}
			}
		}
		out = append(out, h)
	}
	return out, nil
}

// sshTag is the tag age's ssh stanzas carry: the first 4 bytes of the
// SHA-256 of the key's wire form.
func sshTag(authorizedKey string) (string, error) {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(authorizedKey))
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(pk.Marshal())
	return base64.RawStdEncoding.EncodeToString(h[:4]), nil
}

// headerStanzas parses the recipient stanzas of an armored or binary age
// file.
func headerStanzas(data []byte) ([]*age.Stanza, error) {
	var src io.Reader = bytes.NewReader(data)
	if t := bytes.TrimLeft(data, " \t\r\n"); bytes.HasPrefix(t, []byte(armor.Header)) {
		src = armor.NewReader(bytes.NewReader(t))
	}
	hdr, err := age.ExtractHeader(src)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", seal.ErrNotAge, err)
	}
	var out []*age.Stanza
	lines := strings.Split(string(hdr), "\n")
	for i := 0; i < len(lines); i++ {
		f := strings.Fields(lines[i])
		if len(f) < 2 || f[0] != "->" {
			continue
		}
		s := &age.Stanza{Type: f[1], Args: f[2:]}
		var body strings.Builder
		for i++; i < len(lines); i++ {
			body.WriteString(lines[i])
			if len(lines[i]) < 64 {
				break
			}
		}
		if s.Body, err = base64.RawStdEncoding.DecodeString(body.String()); err != nil {
			return nil, fmt.Errorf("%w: stanza %s: %v", seal.ErrNotAge, s.Type, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// heldBy returns the recipients the age file at path is sealed to, from its
// record or else its header.
func heldBy(path string, data []byte, candidates []seal.Recipient, keys []seal.Key) ([]heldRecipient, error) {
	held, ok, err := readRecord(path)
	if err != nil || ok {
		return held, err
	}
	held, err = headerRecipients(data, candidates, keys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return held, nil
}

// dropCheck collects, file by file, the recipients a rekey would drop
// without the operator's consent.
type dropCheck struct {
	next    map[string]bool // the new recipients
	allowed map[string]bool // --drop-recipient keys and node names
	used    map[string]bool
	drop    *dropFlags
	refused []string // "secrets/x.age: age1… (node web-1), …"
}

func newDropCheck(next []seal.Recipient, drop *dropFlags) *dropCheck {
	c := &dropCheck{next: map[string]bool{}, allowed: map[string]bool{}, used: map[string]bool{}, drop: drop}
	for _, r := range next {
		c.next[r.String()] = true
	}
	for _, d := range drop.recipients {
		if r, err := seal.ParseRecipient(d); err == nil {
			d = r.String()
		}
		c.allowed[d] = true
	}
	return c
}

// file checks the recipients path is sealed to today.
func (c *dropCheck) file(path string, held []heldRecipient) {
	var refused []string
	for _, h := range held {
		if h.recipient != "" && c.next[h.recipient] {
			continue
		}
		switch {
		case h.recipient == "" && c.drop.unrecorded:
		case h.recipient != "" && c.allowed[h.recipient]:
			c.used[h.recipient] = true
		case h.recipient != "" && h.node != "" && c.allowed[h.node]:
			c.used[h.node] = true
		default:
			refused = append(refused, h.String())
		}
	}
	if len(refused) > 0 {
		c.refused = append(c.refused, fmt.Sprintf("%s: %s", path, strings.Join(refused, ", ")))
	}
}

// err says what the rekey would drop unasked, or which --drop-recipient
// names nothing it drops.
func (c *dropCheck) err() error {
	if len(c.refused) > 0 {
		return withHint(fmt.Errorf("rekey would drop recipients the files are sealed to (no file was changed):\n  %s", strings.Join(c.refused, "\n  ")),
			"keep them (--recipient, or a --target that selects their nodes), or drop each with --drop-recipient KEY|NODE (--drop-unrecorded for ones slipway cannot name)")
	}
	for _, d := range c.drop.recipients {
		key := d
		if r, err := seal.ParseRecipient(d); err == nil {
			key = r.String()
		}
		if !c.used[key] {
			return withHint(fmt.Errorf("--drop-recipient %s: no file would drop it (no file was changed)", d),
				"give the key or node name of a recipient the files are sealed to and the new recipients lack; the records are secrets/*.recipients")
		}
	}
	return nil
}

// Package seal encrypts secrets to age recipients and decrypts them with age
// identities, in the formats of the age tool and of agenix: X25519
// recipients ("age1…") and identities ("AGE-SECRET-KEY-1…"), and SSH keys
// through age's agessh (ssh-ed25519 and ssh-rsa public keys as recipients,
// unencrypted OpenSSH private keys — a node's host keys — as identities).
// Sealed files are written armored; binary and armored age files are read.
//
// It is used by the agent (its node identity, decrypting a generation's
// secrets) and by the slipway CLI (sealing secrets to the target nodes,
// rekeying a release directory).
//
// What it must never do: log anything; put a private key, a plaintext or a
// line of an identity file into an error or any output (errors name the
// file, the line number and what is wrong); write an identity file that
// anyone but its owner can read, or replace an existing one.
//
// Decisions:
//   - Recipients are X25519 ("age1…"), ssh-ed25519 and ssh-rsa. Post-quantum
//     hybrid recipients ("age1pq1…") are refused: they cannot be mixed with
//     the classic recipients nodes have, and no node has one.
//   - A recipient's canonical text (String) is the Bech32 form for X25519
//     and "type base64" without the comment for SSH keys; Parse(String())
//     gives the same recipient (fuzzed).
//   - The node identity file has the format age-keygen writes (comments with
//     the creation time and the public key, then one AGE-SECRET-KEY-1 line),
//     so `age -d -i identity.age` reads it. LoadIdentity refuses a file
//     that its group or others may access, as ssh does for private keys.
package seal

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"filippo.io/age/armor"
	"golang.org/x/crypto/ssh"

	"github.com/slipway-dev/slipway/shared/atomicfile"
)

// Sentinel errors. Every error of this package that is about its input
// wraps one of them.
var (
	// ErrRecipient: a recipient string is not one this package seals to.
	ErrRecipient = errors.New("invalid recipient")
	// ErrIdentity: an identity file or key cannot be used.
	ErrIdentity = errors.New("invalid identity")
	// ErrNoMatch: none of the identities given can open the age file.
	ErrNoMatch = errors.New("no identity matches")
	// ErrNotAge: the data is not an age file, or a damaged one.
	ErrNotAge = errors.New("not a valid age file")
)

// Limits on input sizes.
const (
	// MaxRecipientLen bounds one recipient string (an ssh-rsa 16384-bit key
	// is about 2.8 KiB).
	MaxRecipientLen = 16 << 10
	// maxIdentityFile bounds an identity or SSH private key file.
	maxIdentityFile = 64 << 10
)

const (
	armorHeader = "-----BEGIN AGE ENCRYPTED FILE-----"
	ageMagic    = "age-encryption.org/v1\n"
)

// Recipient kinds, as Kind returns them (and as age names their stanzas).
const (
	KindX25519     = "X25519"
	KindSSHEd25519 = "ssh-ed25519"
	KindSSHRSA     = "ssh-rsa"
)

// Recipient is a parsed public key a secret can be sealed to.
type Recipient struct {
	r    age.Recipient
	text string
	kind string
}

// String is the canonical text of the recipient: "age1…" or
// "ssh-ed25519 AAAA…" (no comment).
func (r Recipient) String() string { return r.text }

// Kind is KindX25519, KindSSHEd25519 or KindSSHRSA.
func (r Recipient) Kind() string { return r.kind }

// ParseRecipient parses one recipient: an age X25519 public key ("age1…")
// or an SSH public key line ("ssh-ed25519 AAAA… [comment]", "ssh-rsa …").
// Space around it is ignored. Errors wrap ErrRecipient and never quote a
// private key pasted by mistake.
func ParseRecipient(s string) (Recipient, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return Recipient{}, fmt.Errorf("%w: empty", ErrRecipient)
	case len(s) > MaxRecipientLen:
		return Recipient{}, fmt.Errorf("%w: %d bytes, longer than any public key", ErrRecipient, len(s))
	case !utf8.ValidString(s):
		return Recipient{}, fmt.Errorf("%w: not valid UTF-8", ErrRecipient)
	case strings.ContainsAny(s, "\r\n"):
		return Recipient{}, fmt.Errorf("%w: more than one line (one recipient per line)", ErrRecipient)
	case strings.HasPrefix(strings.ToUpper(s), "AGE-SECRET-KEY-"), strings.HasPrefix(s, "-----BEGIN"):
		return Recipient{}, fmt.Errorf("%w: this is a private key, not a recipient (give the public key: `age-keygen -y` prints it)", ErrRecipient)
	case strings.HasPrefix(s, "age1pq1"):
		return Recipient{}, fmt.Errorf("%w: post-quantum recipients (age1pq1…) are not supported; nodes have X25519 identities (age1…)", ErrRecipient)
	case strings.HasPrefix(s, "age1"):
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return Recipient{}, fmt.Errorf("%w: %s is not a valid X25519 recipient (age1…, 62 characters)", ErrRecipient, quote(s))
		}
		return Recipient{r: r, text: r.String(), kind: KindX25519}, nil
	case strings.HasPrefix(s, "ssh-ed25519 "), strings.HasPrefix(s, "ssh-rsa "):
		pk, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(s))
		if err != nil || len(rest) != 0 {
			return Recipient{}, fmt.Errorf("%w: %s is not a valid SSH public key", ErrRecipient, quote(s))
		}
		var r age.Recipient
		switch pk.Type() {
		case KindSSHEd25519:
			r, err = agessh.NewEd25519Recipient(pk)
		case KindSSHRSA:
			r, err = agessh.NewRSARecipient(pk)
		default:
			err = fmt.Errorf("key type %s", pk.Type())
		}
		if err != nil {
			return Recipient{}, fmt.Errorf("%w: %s: %v", ErrRecipient, quote(s), err)
		}
		return Recipient{r: r, text: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))), kind: pk.Type()}, nil
	}
	return Recipient{}, fmt.Errorf("%w: %s is not a recipient: want an age public key (age1…) or an SSH public key (ssh-ed25519 …, ssh-rsa …)", ErrRecipient, quote(s))
}

// ParseRecipients parses a recipients file as the age tool reads one: one
// recipient per line; empty lines and lines starting with "#" are ignored.
// Errors name the line number.
func ParseRecipients(r io.Reader) ([]Recipient, error) {
	sc := bufio.NewScanner(io.LimitReader(r, 16<<20))
	sc.Buffer(make([]byte, 0, 4096), MaxRecipientLen+1024)
	var out []Recipient
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rc, err := ParseRecipient(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, rc)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRecipient, err)
	}
	return out, nil
}

// quote shows untrusted input in an error: quoted in ASCII, at most 64
// bytes of it.
func quote(s string) string {
	q := strconv.QuoteToASCII(s)
	if len(q) > 64 {
		q = q[:60] + `..."`
	}
	return q
}

// Encrypt seals plaintext to every recipient and returns the armored age
// file. The same file opens with the identity of any one of them.
func Encrypt(plaintext []byte, recipients ...Recipient) ([]byte, error) {
	if len(recipients) == 0 {
		return nil, fmt.Errorf("encrypt: %w: no recipients", ErrRecipient)
	}
	rs := make([]age.Recipient, len(recipients))
	for i, r := range recipients {
		if r.r == nil {
			return nil, fmt.Errorf("encrypt: %w: recipient %d is empty", ErrRecipient, i)
		}
		rs[i] = r.r
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, rs...)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if _, err := w.Write(plaintext); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if err := aw.Close(); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return buf.Bytes(), nil
}

// Decrypt opens an age file (armored or binary) with the first identity
// that matches one of its recipients and returns the plaintext, which must
// not be longer than limit bytes. With no matching identity the error wraps
// ErrNoMatch and says which kinds of recipients the file is sealed to; a
// file that is not age, or damaged, wraps ErrNotAge.
func Decrypt(ciphertext []byte, limit int64, ids ...age.Identity) ([]byte, error) {
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: no identities to try", ErrNoMatch)
	}
	var src io.Reader
	text := bytes.TrimLeft(ciphertext, " \t\r\n")
	switch {
	case bytes.HasPrefix(text, []byte(armorHeader)):
		src = armor.NewReader(bytes.NewReader(text))
	case bytes.HasPrefix(ciphertext, []byte(ageMagic)):
		src = bytes.NewReader(ciphertext)
	default:
		return nil, fmt.Errorf("%w: neither an armored nor a binary age file", ErrNotAge)
	}
	r, err := age.Decrypt(src, ids...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, fmt.Errorf("%w: it is sealed to %s", ErrNoMatch, describeStanzas(nm.StanzaTypes))
		}
		return nil, fmt.Errorf("%w: %v", ErrNotAge, err)
	}
	out, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		clear(out)
		return nil, fmt.Errorf("%w: damaged: %v", ErrNotAge, err)
	}
	if int64(len(out)) > limit {
		clear(out)
		return nil, fmt.Errorf("decrypted, it is larger than %d bytes", limit)
	}
	return out, nil
}

// describeStanzas summarises recipient stanza types: "2 recipients
// (X25519, ssh-ed25519)".
func describeStanzas(types []string) string {
	if len(types) == 0 {
		return "no recipient"
	}
	var kinds []string
	seen := map[string]bool{}
	for _, t := range types {
		if !seen[t] {
			seen[t] = true
			kinds = append(kinds, t)
		}
	}
	noun := "recipients"
	if len(types) == 1 {
		noun = "recipient"
	}
	return fmt.Sprintf("%d %s (%s)", len(types), noun, strings.Join(kinds, ", "))
}

// Key is an identity together with the recipient it answers to.
type Key struct {
	Identity age.Identity
	// Recipient is the canonical recipient text of the identity ("age1…",
	// "ssh-ed25519 AAAA…"): public, safe to show.
	Recipient string
}

// Identities returns the identities of keys.
func Identities(keys []Key) []age.Identity {
	out := make([]age.Identity, len(keys))
	for i, k := range keys {
		out[i] = k.Identity
	}
	return out
}

// ReadKeys reads an identity file: an age identity file (one or more
// AGE-SECRET-KEY-1 lines; "#" comments) or an unencrypted OpenSSH/PEM
// private key (ed25519 or RSA), such as /etc/ssh/ssh_host_ed25519_key.
// Errors name path and wrap ErrIdentity (or fs.ErrNotExist); they never
// quote the file.
func ReadKeys(path string) ([]Key, error) {
	data, err := readSmall(path, maxIdentityFile)
	if err != nil {
		return nil, err
	}
	defer clear(data)
	keys, err := ParseKeys(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

// ParseKeys parses the content of an identity file (see ReadKeys).
func ParseKeys(data []byte) ([]Key, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		k, err := parseSSHKey(trimmed)
		if err != nil {
			return nil, err
		}
		return []Key{k}, nil
	}
	var keys []Key
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		switch {
		case strings.HasPrefix(line, "AGE-SECRET-KEY-1"):
			id, err := age.ParseX25519Identity(line)
			if err != nil {
				return nil, fmt.Errorf("%w: line %d: a malformed AGE-SECRET-KEY-1 key", ErrIdentity, i+1)
			}
			keys = append(keys, Key{Identity: id, Recipient: id.Recipient().String()})
		case strings.HasPrefix(line, "AGE-SECRET-KEY-PQ-1"):
			id, err := age.ParseHybridIdentity(line)
			if err != nil {
				return nil, fmt.Errorf("%w: line %d: a malformed AGE-SECRET-KEY-PQ-1 key", ErrIdentity, i+1)
			}
			keys = append(keys, Key{Identity: id, Recipient: id.Recipient().String()})
		case strings.HasPrefix(line, "AGE-PLUGIN-"):
			return nil, fmt.Errorf("%w: line %d: age plugin identities are not supported", ErrIdentity, i+1)
		default:
			return nil, fmt.Errorf("%w: line %d: not an age identity (want AGE-SECRET-KEY-1… lines, or an OpenSSH private key)", ErrIdentity, i+1)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no identity in it", ErrIdentity)
	}
	return keys, nil
}

func parseSSHKey(pemBytes []byte) (Key, error) {
	raw, err := ssh.ParseRawPrivateKey(pemBytes)
	if err != nil {
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			return Key{}, fmt.Errorf("%w: the SSH private key is protected by a passphrase; give an unencrypted key (host keys are)", ErrIdentity)
		}
		return Key{}, fmt.Errorf("%w: not a valid SSH private key", ErrIdentity)
	}
	var pub any
	switch k := raw.(type) {
	case *ed25519.PrivateKey:
		pub = k.Public()
	case ed25519.PrivateKey:
		pub = k.Public()
	case *rsa.PrivateKey:
		pub = k.Public()
	default:
		return Key{}, fmt.Errorf("%w: SSH key type %T is not supported (want ed25519 or RSA)", ErrIdentity, raw)
	}
	id, err := agessh.ParseIdentity(pemBytes)
	if err != nil {
		return Key{}, fmt.Errorf("%w: SSH private key: %v", ErrIdentity, err)
	}
	spk, err := ssh.NewPublicKey(pub)
	if err != nil {
		return Key{}, fmt.Errorf("%w: SSH public key: %v", ErrIdentity, err)
	}
	return Key{Identity: id, Recipient: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spk)))}, nil
}

// readSmall reads a regular file of at most limit bytes.
func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w: not a regular file", path, ErrIdentity)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		clear(data)
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", path, ErrIdentity, limit)
	}
	return data, nil
}

// GenerateIdentity makes a new random X25519 identity.
func GenerateIdentity() (*age.X25519Identity, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, fmt.Errorf("generate identity: %w", err)
	}
	return id, nil
}

// WriteIdentity writes id to path in age-keygen's format, mode 0600,
// atomically, and never over an existing file (the error then wraps
// fs.ErrExist): replacing a node's identity would lock it out of every
// secret sealed to it.
func WriteIdentity(path string, id *age.X25519Identity) error {
	content := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n", time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // 0600
	if err != nil {
		return fmt.Errorf("write identity %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write identity %s: %w", path, err)
	}
	// link(2) fails if path exists: the identity is never replaced.
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("write identity %s: %w", path, err)
	}
	return atomicfile.SyncDir(dir)
}

// LoadIdentity reads a node identity file: exactly one X25519 identity,
// in a regular file that neither its group nor others may access.
func LoadIdentity(path string) (*age.X25519Identity, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("identity %s: %w: mode %04o lets its group or others read it; chmod 600 it", path, ErrIdentity, fi.Mode().Perm())
	}
	keys, err := ReadKeys(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if len(keys) != 1 {
		return nil, fmt.Errorf("identity %s: %w: holds %d identities, want one", path, ErrIdentity, len(keys))
	}
	id, ok := keys[0].Identity.(*age.X25519Identity)
	if !ok {
		return nil, fmt.Errorf("identity %s: %w: not an X25519 identity (AGE-SECRET-KEY-1…)", path, ErrIdentity)
	}
	return id, nil
}

// LoadOrCreateIdentity loads the node identity at path, creating it (0600)
// when the file does not exist. created says whether it was made now.
func LoadOrCreateIdentity(path string) (id *age.X25519Identity, created bool, err error) {
	id, err = LoadIdentity(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return id, false, err
	}
	if id, err = GenerateIdentity(); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("identity: %w", err)
	}
	if err := WriteIdentity(path, id); err != nil {
		if errors.Is(err, fs.ErrExist) { // made by another process meanwhile
			id, err = LoadIdentity(path)
			return id, false, err
		}
		return nil, false, err
	}
	return id, true, nil
}

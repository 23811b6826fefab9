package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/shared/seal"
)

// IdentityView is what `identity --json` prints: public keys only.
type IdentityView struct {
	IdentityFile string       `json:"identity_file"`
	AgeRecipient string       `json:"age_recipient"`
	Created      bool         `json:"created"`
	SSHHostKeys  []SSHKeyView `json:"ssh_host_keys,omitempty"`
}

// SSHKeyView is one SSH host key the agent decrypts with.
type SSHKeyView struct {
	Path      string `json:"path"`
	Recipient string `json:"recipient,omitempty"`
	Error     string `json:"error,omitempty"`
}

func (g *globals) identityCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "identity",
		Short: "Print this node's age recipient (creating its identity if missing) and the SSH host keys it decrypts with",
		Long: `Print the public keys secrets can be sealed to for this node.

The node's age identity (identity_file, default <state_dir>/identity.age,
mode 0600) is created if it does not exist yet; ` + "`slipway-agent run`" + ` creates
it too and reports its recipient when it enrols. The SSH host keys listed in
ssh_host_keys decrypt secrets as well (files sealed for agenix work as they
are). Private keys are never printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.identity()
		},
	}
}

// identity is `slipway-agent identity` (see identityCmd).
func (g *globals) identity() error {
	c, err := g.config()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	path := c.AgeIdentityFile()
	id, created, err := seal.LoadOrCreateIdentity(path)
	if err != nil {
		return err
	}
	v := IdentityView{IdentityFile: path, AgeRecipient: id.Recipient().String(), Created: created}
	if created {
		log := g.logger(c)
		log.Info().Str("identity_file", path).Str("age_recipient", v.AgeRecipient).Msg("node identity created")
	}
	v.SSHHostKeys = sshHostKeys(c.SSHHostKeys)
	if g.jsonOut {
		return writeJSON(g.stdout, v)
	}
	return printIdentity(g.stdout, v)
}

// sshHostKeys lists the recipients of the SSH host keys at paths, and the
// error of each unusable one; a missing file is left out.
func sshHostKeys(paths []string) []SSHKeyView {
	var out []SSHKeyView
	for _, p := range paths {
		keys, err := seal.ReadKeys(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			out = append(out, SSHKeyView{Path: p, Error: err.Error()})
		default:
			for _, k := range keys {
				out = append(out, SSHKeyView{Path: p, Recipient: k.Recipient})
			}
		}
	}
	return out
}

// printIdentity prints v as a table of public keys.
func printIdentity(w io.Writer, v IdentityView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	note := ""
	if v.Created {
		note = " (created now)"
	}
	fmt.Fprintf(tw, "age recipient:\t%s\t%s%s\n", v.AgeRecipient, v.IdentityFile, note)
	for _, k := range v.SSHHostKeys {
		if k.Error != "" {
			fmt.Fprintf(tw, "ssh host key:\tunusable: %s\t%s\n", k.Error, k.Path)
			continue
		}
		fmt.Fprintf(tw, "ssh host key:\t%s\t%s\n", k.Recipient, k.Path)
	}
	return tw.Flush()
}

package config

import (
	"testing"
)

func TestGossipSection(t *testing.T) {
	const on = "[gossip]\nenabled = true\n"
	for _, tc := range []struct{ name, file, want string }{
		{"off by default", "", ""},
		{"off ignores values", "[gossip]\nbind = \"nope\"\n", ""},
		{"on needs a keyring", on, "gossip.keyring_file: required"},
		{"on with a keyring", on + "keyring_file = \"/etc/slipway/gossip.keys\"\n", ""},
		{"on unencrypted on purpose", on + "insecure_no_encryption = true\n", ""},
		{"keyring and unencrypted", on + "keyring_file = \"/k\"\ninsecure_no_encryption = true\n", "gossip.insecure_no_encryption"},
		{"relative keyring", on + "keyring_file = \"gossip.keys\"\n", "gossip.keyring_file: \"gossip.keys\" must be an absolute path"},
		{"everything", on + "keyring_file = \"/k\"\nbind = \"10.0.0.1:7000\"\nadvertise = \"192.0.2.1:7000\"\nnode_name = \"slipway-eu\"\njoin = [\"web-1:7946\", \"10.0.0.2:7946\"]\n", ""},
		{"bad bind", on + "keyring_file = \"/k\"\nbind = \"7946\"\n", "gossip.bind"},
		{"bad bind port", on + "keyring_file = \"/k\"\nbind = \"0.0.0.0:serf\"\n", "gossip.bind: \"0.0.0.0:serf\": want a port number"},
		{"bad advertise", on + "keyring_file = \"/k\"\nadvertise = \"192.0.2.1\"\n", "gossip.advertise"},
		{"bad join", on + "keyring_file = \"/k\"\njoin = [\"web-1:7946\", \"web-2\"]\n", "gossip.join[1]"},
		{"bad node name", on + "keyring_file = \"/k\"\nnode_name = \"\"\n", "gossip.node_name"},
		{"unknown key", "[gossip]\nenable = true\n", "gossip.enable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadText(t, tc.file)
			checkErr(t, err, tc.want)
		})
	}
	d := Default().Gossip
	if d.Enabled || d.Bind != "0.0.0.0:7946" || d.NodeName != "slipway-server" || d.KeyringFile != "" || d.InsecureNoEncryption || d.Advertise != "" || d.Join != nil {
		t.Errorf("gossip defaults: %+v", d)
	}
}

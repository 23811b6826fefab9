package daemon

import (
	"time"

	"github.com/slipway-dev/slipway/server/config"
	"github.com/slipway-dev/slipway/server/notify"
	"github.com/slipway-dev/slipway/server/rollout"
)

// webhooks turns [[notify]] into the registry's rules (which transitions
// owe which webhook a notification) and the delivery worker's targets,
// reading each secret file.
func webhooks(c config.Server) ([]rollout.NotifyRule, map[string]notify.Target, error) {
	var rules []rollout.NotifyRule
	targets := map[string]notify.Target{}
	for _, n := range c.Notify {
		n = n.WithDefaults()
		secret, err := n.Secret()
		if err != nil {
			return nil, nil, err
		}
		rules = append(rules, rollout.NotifyRule{Name: n.Name, Kinds: n.Events, Groups: n.Groups()})
		targets[n.Name] = notify.Target{URL: n.URL, Format: n.Format, Secret: secret, Timeout: time.Duration(n.Timeout),
			MinBackoff: time.Duration(n.RetryMin), MaxBackoff: time.Duration(n.RetryMax), MaxAttempts: n.MaxAttempts}
	}
	return rules, targets, nil
}

package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/satauth"
)

// stateStoreRequestTopic is the state store protocol's request topic (docs/state-store-protocol.md).
const stateStoreRequestTopic = "statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke"

// TestEmbeddedBrokerAuth: the embedded broker authenticates every client and grants each its own:
// K8S-SAT through TokenReview for the audience of the components' projected token, with a service
// account bound to system:auth-delegator; an ACL (parsed by the broker's own parser) that grants
// the connector's components exactly what they use; devicesim's password checked against the
// broker's password file by the broker's own authenticator; no anonymous access.
func TestEmbeddedBrokerAuth(t *testing.T) {
	r := render(t, overlayEmbedded)
	a, err := analyse(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkBrokerAuth(r, a); err != nil {
		t.Fatal(err)
	}
}

// brokerFile returns the content of the file at path of the broker's container: a key of the
// ConfigMap or Secret mounted there.
func brokerFile(r *rendered, pod *corev1.Pod, ctr *corev1.Container, path string) (string, error) {
	v, rel, err := fileSource(pod, ctr, path)
	if err != nil {
		return "", err
	}
	switch {
	case v.ConfigMap != nil:
		cm := r.configMaps[v.ConfigMap.Name]
		if cm == nil {
			return "", fmt.Errorf("%s: ConfigMap %s is not in the overlay", path, v.ConfigMap.Name)
		}
		if d, ok := cm.Data[rel]; ok {
			return d, nil
		}
		return "", fmt.Errorf("%s: ConfigMap %s has no key %s", path, cm.Name, rel)
	case v.Secret != nil:
		return secretValue(r, v.Secret.SecretName, rel)
	}
	return "", fmt.Errorf("%s: volume %s is neither a ConfigMap nor a Secret", path, v.Name)
}

func secretValue(r *rendered, name, key string) (string, error) {
	s := r.secrets[name]
	if s == nil {
		return "", fmt.Errorf("Secret %s is not in the overlay", name)
	}
	if d, ok := s.StringData[key]; ok {
		return d, nil
	}
	if d, ok := s.Data[key]; ok {
		return string(d), nil
	}
	return "", fmt.Errorf("Secret %s has no key %s", name, key)
}

func checkBrokerAuth(r *rendered, a *analysis) error {
	set := r.sets["mqbroker"]
	if set == nil {
		return errors.New("no mqbroker StatefulSet")
	}
	pod := statefulSetPod(set, 0)
	ctr := &pod.Spec.Containers[0]
	args := ctr.Args
	var errs []error
	fail := func(format string, v ...any) { errs = append(errs, fmt.Errorf(format, v...)) }
	if v, ok := boolFlag(args, "-allow-anonymous"); ok && v {
		fail("mqbroker -allow-anonymous lets anonymous clients in (args %q)", args)
	}
	if v, _ := boolFlag(args, "-sat-tokenreview"); !v {
		fail("mqbroker args %q: no -sat-tokenreview", args)
	}
	audience, _ := flag(args, "-sat-audience")
	if audience == "" {
		fail("mqbroker args %q: no -sat-audience", args)
	}

	// TokenReview: the broker's service account may create tokenreviews.
	sa := set.Spec.Template.Spec.ServiceAccountName
	bound := false
	for _, b := range r.bindings {
		if b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != "system:auth-delegator" {
			continue
		}
		for _, s := range b.Subjects {
			if s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == set.Namespace {
				bound = true
			}
		}
	}
	if sa == "" || !bound {
		fail("mqbroker's service account %q (namespace %s) is bound to no ClusterRole system:auth-delegator: TokenReview is forbidden", sa, set.Namespace)
	}

	// Every component authenticates with a token for the broker's audience.
	app := r.sets[appSet]
	for _, c := range r.components {
		p := a.parsed[c.Name]
		if p.SATAuthFile == "" {
			fail("Component %s has no satAuthFile: the broker refuses it", c.Name)
			continue
		}
		for _, pod := range a.pods {
			aud, err := tokenAudience(pod, container(pod, componentContainerName(c)), p.SATAuthFile)
			if err != nil || aud != audience {
				fail("Component %s: token %s for audience %q (%v), the broker's -sat-audience is %q", c.Name, p.SATAuthFile, aud, err, audience)
			}
		}
	}

	// The ACL, through the broker's parser, grants the connector's identity what its components do.
	aclPath, _ := flag(args, "-acl-file")
	if aclPath == "" {
		fail("mqbroker args %q: no -acl-file", args)
		return errors.Join(errs...)
	}
	aclText, err := brokerFile(r, pod, ctr, aclPath)
	if err != nil {
		fail("mqbroker -acl-file: %v", err)
		return errors.Join(errs...)
	}
	af, err := broker.ParseACLFile(aclPath, []byte(aclText))
	if err != nil {
		fail("mqbroker -acl-file: %v", err)
		return errors.Join(errs...)
	}
	acl := broker.NewACL(nil, af, nil)
	identity := satauth.Identity{Namespace: app.Namespace, ServiceAccount: app.Spec.Template.Spec.ServiceAccountName}.String()
	ctx := context.Background()
	for _, id := range a.clientIDs {
		c := broker.Client{ID: id, Username: identity}
		switch {
		case strings.HasSuffix(id, "-ps"):
			for _, f := range []string{"$share/connector/devices/+/telemetry", "config/assets/+"} {
				if err := acl.AuthorizeSubscribe(ctx, c, f); err != nil {
					fail("%s (%s) cannot subscribe to %s: %v", id, identity, f, err)
				}
			}
			for _, topic := range []string{"connector/rejected", "connector/dead-letter"} {
				if err := acl.AuthorizePublish(ctx, c, topic); err != nil {
					fail("%s (%s) cannot publish to %s: %v", id, identity, topic, err)
				}
			}
		case strings.HasSuffix(id, "-kv"):
			resp := "clients/" + id + "/services/" + stateStoreRequestTopic + "/response"
			for _, topic := range []string{stateStoreRequestTopic, resp} {
				if err := acl.AuthorizePublish(ctx, c, topic); err != nil {
					fail("%s (%s) cannot publish to %s: %v", id, identity, topic, err)
				}
			}
			if err := acl.AuthorizeSubscribe(ctx, c, resp); err != nil {
				fail("%s (%s) cannot subscribe to its response topic: %v", id, identity, err)
			}
			for _, key := range []string{"connector||dedup/x", "connector||dedup/x\x00mqdapr-lock"} {
				for _, write := range []bool{false, true} {
					if err := acl.AuthorizeKey(c, []byte(key), write); err != nil {
						fail("%s (%s) cannot %s key %q: %v", id, identity, map[bool]string{false: "read", true: "write"}[write], key, err)
					}
				}
			}
			if acl.AuthorizeKey(c, []byte("other-app||x"), false) == nil {
				fail("%s (%s) may read another app's keys", id, identity)
			}
			other := "clients/other-kv/services/" + stateStoreRequestTopic + "/response"
			if acl.AuthorizeSubscribe(ctx, c, other) == nil {
				fail("%s (%s) may read another client's responses", id, identity)
			}
		}
	}
	if acl.AuthorizeSubscribe(ctx, broker.Client{ID: "x", Username: "other-ns/connector"}, "devices/+/telemetry") == nil {
		fail("another namespace's service account connector may read the telemetry")
	}

	// devicesim: user name and password, checked by the broker's own authenticator against the
	// password file; it may publish its telemetry, not read anything.
	pwPath, _ := flag(args, "-password-file")
	dep := r.deploys["devicesim"]
	if dep == nil {
		return errors.Join(append(errs, errors.New("no devicesim Deployment"))...)
	}
	dctr := dep.Spec.Template.Spec.Containers[0]
	brokerURL, _ := flag(dctr.Args, "-broker")
	u, err := url.Parse(expandEnv(brokerURL, dctr, r))
	if err != nil || u.User == nil {
		fail("devicesim -broker %q: no user:password@ (%v)", brokerURL, err)
		return errors.Join(errs...)
	}
	pwText, err := brokerFile(r, pod, ctr, pwPath)
	if err != nil {
		fail("mqbroker -password-file: %v", err)
		return errors.Join(errs...)
	}
	pf, err := broker.ParsePasswordFile(pwPath, []byte(pwText))
	if err != nil {
		fail("mqbroker -password-file: %v", err)
		return errors.Join(errs...)
	}
	pw, _ := u.User.Password()
	req := &broker.AuthRequest{ClientID: "devicesim", Username: u.User.Username(), Password: []byte(pw), HasPassword: true}
	if _, err := broker.NewPasswordAuth(pf, false).Authenticate(ctx, req); err != nil {
		fail("devicesim's credentials: %v", err)
	}
	dc := broker.Client{ID: "devicesim", Username: u.User.Username()}
	for _, topic := range []string{"devices/dev-0/telemetry", "config/assets/asset-0"} {
		if err := acl.AuthorizePublish(ctx, dc, topic); err != nil {
			fail("devicesim cannot publish to %s: %v", topic, err)
		}
	}
	if acl.AuthorizeSubscribe(ctx, dc, "#") == nil {
		fail("devicesim may subscribe to everything")
	}
	return errors.Join(errs...)
}

// boolFlag returns the value of a boolean flag (-name, -name=true|false; one or two dashes) and
// whether it is given.
func boolFlag(args []string, name string) (value, given bool) {
	for _, a := range args {
		a = strings.TrimPrefix(a, "-")
		if a == name[1:] {
			return true, true
		}
		if v, ok := strings.CutPrefix(a, name[1:]+"="); ok {
			return v != "false" && v != "0", true
		}
	}
	return false, false
}

// expandEnv replaces $(NAME) in s as the kubelet does, with the container's env values, read from
// the overlay's Secrets for secretKeyRef.
func expandEnv(s string, c corev1.Container, r *rendered) string {
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			v, _ = secretValue(r, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
		}
		// As devicesim's URL carries it: escaped for the user info ("u:" + the escaped password).
		s = strings.ReplaceAll(s, "$("+e.Name+")", strings.TrimPrefix(url.UserPassword("u", v).String(), "u:"))
	}
	return s
}

// TestBrokerAuthChecksFail breaks the embedded overlay's authentication one way at a time: each
// check of checkBrokerAuth can fail, naming what is wrong.
func TestBrokerAuthChecksFail(t *testing.T) {
	brokerArgs := func(r *rendered) *[]string { return &r.sets["mqbroker"].Spec.Template.Spec.Containers[0].Args }
	without := func(args []string, name string, value bool) []string {
		var out []string
		for i := 0; i < len(args); i++ {
			if args[i] == name {
				if value {
					i++
				}
				continue
			}
			out = append(out, args[i])
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		breakIt func(*rendered)
		want    string
	}{
		{"anonymous clients let in", func(r *rendered) {
			a := brokerArgs(r)
			*a = append(*a, "-allow-anonymous=true")
		}, "-allow-anonymous lets anonymous clients in"},
		{"no TokenReview", func(r *rendered) {
			a := brokerArgs(r)
			*a = without(*a, "-sat-tokenreview", false)
		}, "no -sat-tokenreview"},
		{"the broker expects another audience", func(r *rendered) {
			a := brokerArgs(r)
			*a = append(without(*a, "-sat-audience", true), "-sat-audience", "other")
		}, `the broker's -sat-audience is "other"`},
		{"no auth-delegator binding", func(r *rendered) {
			clear(r.bindings)
		}, "bound to no ClusterRole system:auth-delegator"},
		{"the ACL misses the state store's keys", func(r *rendered) {
			cm := r.configMaps["mqbroker-acl"]
			cm.Data["acl"] = strings.Replace(cm.Data["acl"], "key readwrite connector||", "key read connector||", 1)
		}, `cannot write key "connector||dedup/x`},
		{"the ACL does not parse", func(r *rendered) {
			cm := r.configMaps["mqbroker-acl"]
			cm.Data["acl"] += "topic rw x\n"
		}, `access "rw"`},
		{"the ACL names another namespace", func(r *rendered) {
			cm := r.configMaps["mqbroker-acl"]
			cm.Data["acl"] = strings.Replace(cm.Data["acl"], "user mqdapr/connector", "user default/connector", 1)
		}, "(mqdapr/connector) cannot subscribe to $share/connector/devices/+/telemetry"},
		{"devicesim's password is not the password file's", func(r *rendered) {
			r.secrets["devicesim-mqtt"].StringData["password"] = "guess"
		}, `devicesim's credentials: mqtt reason 0x86`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := render(t, overlayEmbedded)
			a, err := analyse(t, r)
			if err != nil {
				t.Fatal(err)
			}
			tc.breakIt(r)
			err = checkBrokerAuth(r, a)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("checkBrokerAuth: %v\nwant an error containing %q", err, tc.want)
			}
		})
	}
}

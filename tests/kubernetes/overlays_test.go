package kubernetes

import (
	"slices"
	"strings"
	"testing"

	"github.com/dapr/dapr/pkg/apis/common"
	componentsapi "github.com/dapr/dapr/pkg/apis/components/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

// The socket folder the components and daprd share: the default of both (components-go-sdk and
// daprd's discovery).
const socketsFolder = "/tmp/dapr-components-sockets"

// TestEmbeddedBroker: both replicas get daprd and both component containers on one socket
// volume, the components reach mqbroker through its Service, and the broker keeps its data on a
// claim.
func TestEmbeddedBroker(t *testing.T) {
	r := render(t, overlayEmbedded)
	a, err := analyse(t, r)
	if err != nil {
		t.Fatal(err)
	}
	checkDefaultSockets(t, a)
	for _, name := range []string{"mqtt", "kv"} {
		p := a.parsed[name]
		u, err := p.BrokerURL()
		if err != nil || u.String() != "mqtt://mqbroker:1883" {
			t.Errorf("Component %s dials %v (%v), want mqtt://mqbroker:1883", name, u, err)
		}
	}
	if got := a.parsed["mqtt"].stateDir; got != "/var/lib/mqdapr/pubsub" {
		t.Errorf("stateDir %q", got)
	}
	broker := r.sets["mqbroker"]
	if broker == nil || len(broker.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("mqbroker StatefulSet with one volume claim template: %+v", broker)
	}
	ctr := broker.Spec.Template.Spec.Containers[0]
	dataDir, _ := flag(ctr.Args, "-data-dir")
	if m := mountOf(&ctr, broker.Spec.VolumeClaimTemplates[0].Name); m == nil || m.MountPath != dataDir {
		t.Errorf("mqbroker -data-dir %q is not the claim's mount %+v", dataDir, m)
	}
}

// TestAIO: the components dial AIO's broker over TLS with the CA trust bundle and a projected
// service-account token for AIO's audience, both mounted in both component containers.
func TestAIO(t *testing.T) {
	r := render(t, overlayAIO)
	a, err := analyse(t, r)
	if err != nil {
		t.Fatal(err)
	}
	checkDefaultSockets(t, a)
	for _, pod := range a.pods {
		for _, name := range []string{"mqtt", "kv"} {
			p := a.parsed[name]
			u, err := p.BrokerURL()
			if err != nil || u.String() != "mqtts://aio-broker:18883" {
				t.Errorf("Component %s dials %v (%v), want mqtts://aio-broker:18883", name, u, err)
			}
			var c componentsapi.Component
			for _, comp := range r.components {
				if comp.Name == name {
					c = comp
				}
			}
			ctr := container(pod, componentContainerName(c))
			aud, err := tokenAudience(pod, ctr, p.SATAuthFile)
			if err != nil || aud != "aio-internal" {
				t.Errorf("pod %s, %s: token %s for audience %q (%v), want aio-internal", pod.Name, ctr.Name, p.SATAuthFile, aud, err)
			}
			v, rel, err := fileSource(pod, ctr, p.CAFile)
			if err != nil || v.ConfigMap == nil || v.ConfigMap.Name != "azure-iot-operations-aio-ca-trust-bundle" || rel != "ca.crt" {
				t.Errorf("pod %s, %s: caFile %s from %+v %q (%v), want key ca.crt of ConfigMap azure-iot-operations-aio-ca-trust-bundle", pod.Name, ctr.Name, p.CAFile, v, rel, err)
			}
		}
	}
}

// TestConsumerIDPerNamespace: the README's advice for two deployments of one app id on one
// broker, consumerID "{namespace}" on both Components, gives every client id the namespace
// (daprd's own template expansion, then the components' derivation).
func TestConsumerIDPerNamespace(t *testing.T) {
	r := render(t, overlayAIO)
	for i := range r.components {
		r.components[i].Spec.Metadata = append(r.components[i].Spec.Metadata, common.NameValuePair{Name: "consumerID",
			Value: common.DynamicValue{JSON: apiextensionsv1.JSON{Raw: []byte(`"{namespace}"`)}}})
	}
	a, err := analyse(t, r)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"azure-iot-operations.connector-connector-0-ps", "azure-iot-operations.connector-connector-0-kv",
		"azure-iot-operations.connector-connector-1-ps", "azure-iot-operations.connector-connector-1-kv",
	}
	if !slices.Equal(a.clientIDs, want) {
		t.Fatalf("client ids %q, want %q", a.clientIDs, want)
	}
}

// checkDefaultSockets: the socket volume is at the default folder everywhere, and the components
// see it in DAPR_COMPONENT_SOCKETS_FOLDER.
func checkDefaultSockets(t *testing.T, a *analysis) {
	t.Helper()
	for _, pod := range a.pods {
		for _, name := range []string{daprdContainer, "pubsub-mqtt5", "state-kv"} {
			c := container(pod, name)
			if m := mountOf(c, socketVolume); m == nil || m.MountPath != socketsFolder {
				t.Errorf("pod %s: %s mounts the socket volume at %+v, want %s", pod.Name, name, m, socketsFolder)
			}
			if name != daprdContainer && env(c)["DAPR_COMPONENT_SOCKETS_FOLDER"] != socketsFolder {
				t.Errorf("pod %s: %s has DAPR_COMPONENT_SOCKETS_FOLDER %q", pod.Name, name, env(c)["DAPR_COMPONENT_SOCKETS_FOLDER"])
			}
		}
	}
	if len(a.clientIDs) != 4 {
		t.Errorf("client ids %q, want 2 replicas × 2 components", a.clientIDs)
	}
}

// TestChecksFail breaks the rendered manifests one way at a time and expects the checks to say
// what is wrong: each check above can fail.
func TestChecksFail(t *testing.T) {
	component := func(r *rendered, name string) *componentsapi.Component {
		for i := range r.components {
			if r.components[i].Name == name {
				return &r.components[i]
			}
		}
		t.Fatalf("no Component %s", name)
		return nil
	}
	addMetadata := func(c *componentsapi.Component, name, value string) {
		c.Spec.Metadata = append(c.Spec.Metadata, common.NameValuePair{Name: name,
			Value: common.DynamicValue{JSON: apiextensionsv1.JSON{Raw: []byte(`"` + value + `"`)}}})
	}
	for _, tc := range []struct {
		name, overlay string
		breakIt       func(*rendered)
		want          string
	}{
		{"a Component whose scopes miss the app gets no container, and is not loaded", overlayEmbedded, func(r *rendered) {
			component(r, "kv").Scopes = []string{"other-app"}
		}, `containers ["app" "daprd" "pubsub-mqtt5"]`},
		{"without dapr.io/inject-pluggable-components no component container is injected", overlayEmbedded, func(r *rendered) {
			delete(r.sets[appSet].Spec.Template.Annotations, "dapr.io/inject-pluggable-components")
		}, `containers ["app" "daprd"]`},
		{"a Component without its container annotation is loaded with no container", overlayEmbedded, func(r *rendered) {
			delete(component(r, "kv").Annotations, annotationComponentContainer)
		}, "daprd loads Component kv (state.mqttkv) but no container kv serves its socket"},
		{"a Component whose type is not the socket its container serves", overlayEmbedded, func(r *rendered) {
			component(r, "mqtt").Spec.Type = "pubsub.mqtt5"
		}, "type pubsub.mqtt5, but its container serves mqttv5.sock"},
		{"a custom sockets folder leaves daprd looking in the default one", overlayEmbedded, func(r *rendered) {
			r.sets[appSet].Spec.Template.Annotations["dapr.io/pluggable-components-sockets-folder"] = "/var/run/components"
		}, "daprd discovers components in /tmp/dapr-components-sockets (DAPR_COMPONENTS_SOCKETS_FOLDER unset) but the socket volume is mounted at /var/run/components"},
		{"without the stateDir claim the injector gives it an emptyDir", overlayEmbedded, func(r *rendered) {
			s := r.sets[appSet]
			s.Spec.VolumeClaimTemplates = slices.DeleteFunc(s.Spec.VolumeClaimTemplates, func(c corev1.PersistentVolumeClaim) bool { return c.Name == "pubsub-state" })
		}, "volume pubsub-state is not a persistent volume claim"},
		{"a misspelt metadata key", overlayEmbedded, func(r *rendered) {
			addMetadata(component(r, "mqtt"), "recieveMaximum", "8")
		}, `metadata keys the component does not know: ["recieveMaximum"]`},
		{"more telemetry partitions than receiveMaximum", overlayEmbedded, func(r *rendered) {
			for _, c := range r.sets[appSet].Spec.Template.Spec.Containers {
				for i := range c.Env {
					if c.Name == appContainer && c.Env[i].Name == "TELEMETRY_PARTITIONS" {
						c.Env[i].Value = "32"
					}
				}
			}
		}, "the app's TELEMETRY_PARTITIONS 32 > receiveMaximum 16 of Component mqtt"},
		{"a malformed metadata value", overlayEmbedded, func(r *rendered) {
			addMetadata(component(r, "kv"), "requestTimeout", "soon")
		}, "requestTimeout"},
		{"a fixed clientID makes the replicas share a session", overlayEmbedded, func(r *rendered) {
			addMetadata(component(r, "mqtt"), "clientID", "connector")
		}, `MQTT client id "connector-connector-ps" is used twice`},
		{"a broker Service the overlay does not have", overlayEmbedded, func(r *rendered) {
			delete(r.services, "mqbroker")
		}, "no Service mqbroker in the overlay"},
		{"a grace period shorter than the drain", overlayEmbedded, func(r *rendered) {
			g := int64(30)
			r.sets[appSet].Spec.Template.Spec.TerminationGracePeriodSeconds = &g
		}, "terminationGracePeriodSeconds 30s < 40s preStop + 10s shutdownTimeout of pubsub-mqtt5"},
		{"daprd not blocking its shutdown while the app drains", overlayEmbedded, func(r *rendered) {
			delete(r.sets[appSet].Spec.Template.Annotations, "dapr.io/block-shutdown-duration")
		}, "daprd blocks its shutdown 0s, less than the app's -shutdown-timeout 30s"},
		{"an app port daprd does not call", overlayEmbedded, func(r *rendered) {
			r.sets[appSet].Spec.Template.Annotations["dapr.io/app-port"] = "6001"
		}, `daprd --app-port "6001", the app listens on 6002`},
		{"a component container running as another user", overlayEmbedded, func(r *rendered) {
			c := component(r, "kv")
			c.Annotations[annotationComponentContainer] = strings.Replace(c.Annotations[annotationComponentContainer],
				`"allowPrivilegeEscalation"`, `"runAsUser": 1000, "allowPrivilegeEscalation"`, 1)
		}, "container state-kv does not run as daprd's UID 65532"},
		{"one replica is no shared subscription", overlayEmbedded, func(r *rendered) {
			one := int32(1)
			r.sets[appSet].Spec.Replicas = &one
		}, "has 1 replicas"},
		{"without the token volume the injector gives the token mount an emptyDir", overlayAIO, func(r *rendered) {
			s := r.sets[appSet]
			s.Spec.Template.Spec.Volumes = slices.DeleteFunc(s.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "mqtt-client-token" })
		}, "/var/run/secrets/tokens/mqtt-client-token (volume mqtt-client-token) is not a projected service-account token"},
		{"a CA file outside every mount", overlayAIO, func(r *rendered) {
			addMetadata(component(r, "kv"), "caFile", "/etc/ssl/ca.crt")
		}, "caFile: pod connector-0: /etc/ssl/ca.crt is on no volume of container state-kv"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := render(t, tc.overlay)
			tc.breakIt(r)
			_, err := analyse(t, r)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("analyse: %v\nwant an error containing %q", err, tc.want)
			}
		})
	}
}

package kubernetes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	componentsapi "github.com/dapr/dapr/pkg/apis/components/v1alpha1"
	"github.com/dapr/dapr/pkg/components/pluggable"
	"github.com/dapr/dapr/pkg/injector/patcher"
	"github.com/dapr/dapr/pkg/modes"
	"github.com/dapr/dapr/pkg/runtime/meta"
	pubsubmqtt5 "github.com/mqdapr/mqdapr/components/pubsub-mqtt5"
	statekv "github.com/mqdapr/mqdapr/components/state-kv"
	"github.com/mqdapr/mqdapr/internal/mqttconn"
	mqpluggable "github.com/mqdapr/mqdapr/internal/pluggable"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// The names the checks rely on.
const (
	appSet       = "connector" // the app's StatefulSet
	appContainer = "app"
	// daprdContainer and socketVolume are what Dapr's injector names them
	// (pkg/injector/consts: SidecarContainerName, ComponentsUDSVolumeName).
	daprdContainer = "daprd"
	socketVolume   = "dapr-components-unix-domain-socket"
	// appDefaultPort is the app's -app-port default (app/README.md), used when APP_PORT is unset.
	appDefaultPort = "6002"
)

// served maps each component image (without tag) to the socket its binary serves: daprd
// registers `<kind>.<name>` for a socket `<name>.sock`, so a Component's spec.type must be that.
var served = map[string]struct{ kind, name string }{
	"mqdapr/pubsub-mqtt5": {"pubsub", pubsubmqtt5.ComponentName},
	"mqdapr/state-kv":     {"state", statekv.ComponentName},
}

// analysis is what the checks found in one overlay: the injected pods (one per replica) and each
// Component's parsed metadata.
type analysis struct {
	pods   []*corev1.Pod
	parsed map[string]parsed // by Component name
	// clientIDs are the MQTT client ids every component of every replica would use.
	clientIDs []string
}

// parsed is what the checks need of a Component's metadata, as its component parsed it.
type parsed struct {
	mqttconn.Settings
	kind     mqttconn.Kind
	shutdown time.Duration // how long it drains after SIGTERM
	stateDir string        // the pub/sub component's record of filters
	// receiveMaximum bounds the pub/sub component's handler calls across all partitions.
	receiveMaximum int
}

// analyse injects Dapr's sidecar and the component containers into the pod of every replica of
// the app's StatefulSet, as the cluster would, and checks the result. Every failed check is in
// the returned error.
func analyse(t *testing.T, r *rendered) (*analysis, error) {
	t.Helper()
	set := r.sets[appSet]
	if set == nil {
		return nil, fmt.Errorf("no StatefulSet %s", appSet)
	}
	a := &analysis{parsed: map[string]parsed{}}
	var errs []error
	replicas := 1
	if set.Spec.Replicas != nil {
		replicas = int(*set.Spec.Replicas)
	}
	if replicas < 2 {
		errs = append(errs, fmt.Errorf("StatefulSet %s has %d replicas: want 2 or more on the shared subscription", appSet, replicas))
	}
	for ordinal := range replicas {
		pod, err := inject(statefulSetPod(set, ordinal), r.components)
		if err != nil {
			return nil, fmt.Errorf("injecting into %s-%d: %w", appSet, ordinal, err)
		}
		a.pods = append(a.pods, pod)
		errs = append(errs, checkContainers(pod), checkSockets(t, pod, r.components), checkUser(pod), checkAppWiring(pod))
		for _, c := range loaded(pod, r.components) {
			p, err := parseComponent(pod, c)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			a.parsed[c.Name] = p
			errs = append(errs, checkFiles(pod, c, p.Settings), checkBroker(r, c, p.Settings), checkShutdown(pod, c, p.shutdown))
			if p.kind == mqttconn.KindPubSub {
				errs = append(errs, checkStateDir(pod, c, p.stateDir), checkPartitions(pod, c, p.receiveMaximum))
			}
			id, err := clientID(pod, p)
			errs = append(errs, err)
			a.clientIDs = append(a.clientIDs, id)
		}
	}
	seen := map[string]bool{}
	for _, id := range a.clientIDs {
		if id != "" && seen[id] {
			errs = append(errs, fmt.Errorf("MQTT client id %q is used twice: replicas would take each other's session over", id))
		}
		seen[id] = true
	}
	return a, errors.Join(errs...)
}

// statefulSetPod is the pod the StatefulSet controller creates for one ordinal, as the admission
// webhooks (Dapr's injector among them) receive it: the template, named <set>-<ordinal>, with
// that name as host name, the governing Service as subdomain, and one persistentVolumeClaim
// volume per claim template, named after the template, claim <template>-<set>-<ordinal> (what
// Kubernetes' statefulset controller does in newVersionedStatefulSetPod and updateStorage).
func statefulSetPod(set *appsv1.StatefulSet, ordinal int) *corev1.Pod {
	tmpl := set.Spec.Template.DeepCopy()
	pod := &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
	pod.Name = fmt.Sprintf("%s-%d", set.Name, ordinal)
	pod.Namespace = set.Namespace
	pod.Spec.Hostname = pod.Name
	pod.Spec.Subdomain = set.Spec.ServiceName
	for _, claim := range set.Spec.VolumeClaimTemplates {
		pod.Spec.Volumes = slices.DeleteFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == claim.Name })
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
			Name: claim.Name,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
				ClaimName: fmt.Sprintf("%s-%s-%d", claim.Name, set.Name, ordinal),
			}},
		})
	}
	return pod
}

// inject runs Dapr's sidecar injector patch code on pod, with the settings its webhook sets
// (pkg/injector/service getPodPatchOperations) for a default install in dapr-system, and the
// Components of the pod's namespace as the cluster holds them.
func inject(pod *corev1.Pod, comps []componentsapi.Component) (*corev1.Pod, error) {
	sc := patcher.NewSidecarConfig(pod)
	sc.GetInjectedComponentContainers = func(appID, namespace string) ([]corev1.Container, error) {
		var inNS []componentsapi.Component
		for _, c := range comps {
			if c.Namespace == namespace {
				inNS = append(inNS, c)
			}
		}
		return patcher.Injectable(appID, inNS), nil
	}
	sc.Namespace = pod.Namespace
	sc.Identity = pod.Namespace + ":" + pod.Spec.ServiceAccountName
	sc.MTLSEnabled = true
	sc.ControlPlaneNamespace = "dapr-system"
	sc.ControlPlaneTrustDomain = "cluster.local"
	sc.SentryAddress = "dapr-sentry.dapr-system.svc.cluster.local:443"
	sc.OperatorAddress = "dapr-api.dapr-system.svc.cluster.local:443"
	sc.SentrySPIFFEID = "spiffe://cluster.local/ns/dapr-system/dapr-sentry"
	sc.SidecarImage = "daprio/daprd:1.16.0"
	sc.SetFromPodAnnotations()
	patch, err := sc.GetPatch()
	if err != nil {
		return nil, fmt.Errorf("GetPatch: %w", err)
	}
	if len(patch) == 0 {
		return nil, errors.New("the injector has nothing to patch (dapr.io/enabled missing?)")
	}
	return patcher.PatchPod(pod, patch)
}

// loaded is the Components daprd in pod loads: those of its namespace whose scopes are empty or
// name its app id.
func loaded(pod *corev1.Pod, comps []componentsapi.Component) []componentsapi.Component {
	appID := pod.Annotations["dapr.io/app-id"]
	var out []componentsapi.Component
	for _, c := range comps {
		if c.Namespace == pod.Namespace && (len(c.Scopes) == 0 || slices.Contains(c.Scopes, appID)) {
			out = append(out, c)
		}
	}
	return out
}

func container(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

func volume(pod *corev1.Pod, name string) *corev1.Volume {
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == name {
			return &pod.Spec.Volumes[i]
		}
	}
	return nil
}

// env is a container's literal environment (valueFrom entries are not literal, so left out).
func env(c *corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			m[e.Name] = e.Value
		}
	}
	return m
}

// underEnv runs fn with the variables names set as in container c (unset where c has none), so
// that code reading them (daprd's socket discovery, the components' socket path) sees what it
// would see in the container.
func underEnv(t *testing.T, c *corev1.Container, fn func(), names ...string) {
	t.Helper()
	e := env(c)
	for _, n := range names {
		t.Setenv(n, e[n]) // restores the old value after the test
		if _, ok := e[n]; !ok {
			os.Unsetenv(n)
		}
	}
	fn()
}

// flag returns the value after --name in args.
func flag(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// componentContainerName is the name the injector gives a Component's container.
func componentContainerName(c componentsapi.Component) string {
	ctr, err := componentContainer(c)
	if err != nil || ctr.Name == "" {
		return c.Name
	}
	return ctr.Name
}

// checkContainers: the app, daprd and one container per component, nothing else.
func checkContainers(pod *corev1.Pod) error {
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	if want := []string{appContainer, daprdContainer, "pubsub-mqtt5", "state-kv"}; !slices.Equal(names, want) {
		return fmt.Errorf("pod %s has containers %q, want %q", pod.Name, names, want)
	}
	return nil
}

// checkSockets: daprd and every loaded Component's container share the socket volume, the
// component serves its socket in the folder daprd's discovery reads (both computed by the real
// code under each container's environment), and the Component's type names that socket.
func checkSockets(t *testing.T, pod *corev1.Pod, comps []componentsapi.Component) error {
	v := volume(pod, socketVolume)
	if v == nil || v.EmptyDir == nil {
		return fmt.Errorf("pod %s: no emptyDir volume %s", pod.Name, socketVolume)
	}
	daprd := container(pod, daprdContainer)
	daprdMount := mountOf(daprd, socketVolume)
	if daprdMount == nil {
		return fmt.Errorf("pod %s: daprd does not mount %s", pod.Name, socketVolume)
	}
	var discovered string
	underEnv(t, daprd, func() { discovered = pluggable.GetSocketFolderPath() }, pluggable.SocketFolderEnvVar)
	if discovered != daprdMount.MountPath {
		return fmt.Errorf("pod %s: daprd discovers components in %s (%s unset) but the socket volume is mounted at %s",
			pod.Name, discovered, pluggable.SocketFolderEnvVar, daprdMount.MountPath)
	}
	var errs []error
	for _, c := range loaded(pod, comps) {
		name := componentContainerName(c)
		ctr := container(pod, name)
		if ctr == nil {
			errs = append(errs, fmt.Errorf("pod %s: daprd loads Component %s (%s) but no container %s serves its socket: daprd would fail", pod.Name, c.Name, c.Spec.Type, name))
			continue
		}
		m := mountOf(ctr, socketVolume)
		if m == nil {
			errs = append(errs, fmt.Errorf("pod %s: container %s does not mount %s", pod.Name, name, socketVolume))
			continue
		}
		s, ok := served[strings.Split(ctr.Image, ":")[0]]
		if !ok {
			errs = append(errs, fmt.Errorf("Component %s: image %s is none of mqdapr's component images", c.Name, ctr.Image))
			continue
		}
		if want := s.kind + "." + s.name; c.Spec.Type != want {
			errs = append(errs, fmt.Errorf("Component %s: type %s, but its container serves %s.sock (type %s)", c.Name, c.Spec.Type, s.name, want))
		}
		var socket string
		underEnv(t, ctr, func() { socket = mqpluggable.SocketPath(s.name) },
			"DAPR_COMPONENT_SOCKETS_FOLDER", "DAPR_COMPONENT_SOCKET_FOLDER")
		if filepath.Dir(socket) != m.MountPath {
			errs = append(errs, fmt.Errorf("pod %s: container %s serves %s, outside its socket volume mount %s", pod.Name, name, socket, m.MountPath))
		}
		if m.SubPath != "" || daprdMount.SubPath != "" {
			errs = append(errs, fmt.Errorf("pod %s: the socket volume is mounted with a subPath", pod.Name))
		}
	}
	return errors.Join(errs...)
}

func mountOf(c *corev1.Container, volumeName string) *corev1.VolumeMount {
	if c == nil {
		return nil
	}
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == volumeName {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// checkUser: daprd and the component containers run as one UID, so that daprd may connect to the
// sockets the components create (a unix socket needs write permission to connect).
func checkUser(pod *corev1.Pod) error {
	uid := func(c *corev1.Container) *int64 {
		if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
			return c.SecurityContext.RunAsUser
		}
		if pod.Spec.SecurityContext != nil {
			return pod.Spec.SecurityContext.RunAsUser
		}
		return nil
	}
	want := uid(container(pod, daprdContainer))
	if want == nil {
		return fmt.Errorf("pod %s: daprd's UID is not set (the image's own user then decides)", pod.Name)
	}
	for _, c := range pod.Spec.Containers {
		if got := uid(&c); got == nil || *got != *want {
			return fmt.Errorf("pod %s: container %s does not run as daprd's UID %d", pod.Name, c.Name, *want)
		}
	}
	return nil
}

// checkAppWiring: daprd calls the app where it listens, with its protocol, and the app calls
// daprd's gRPC API where daprd listens.
func checkAppWiring(pod *corev1.Pod) error {
	daprd, app := container(pod, daprdContainer), container(pod, appContainer)
	appPort := env(app)["APP_PORT"]
	if appPort == "" {
		appPort = appDefaultPort
	}
	if got, _ := flag(daprd.Args, "--app-port"); got != appPort {
		return fmt.Errorf("pod %s: daprd --app-port %q, the app listens on %s", pod.Name, got, appPort)
	}
	if got, _ := flag(daprd.Args, "--app-protocol"); got != "grpc" {
		return fmt.Errorf("pod %s: daprd --app-protocol %q, the app is a gRPC app", pod.Name, got)
	}
	grpcPort, _ := flag(daprd.Args, "--dapr-grpc-port")
	if got := env(app)["DAPR_GRPC_PORT"]; got != grpcPort {
		return fmt.Errorf("pod %s: the app's DAPR_GRPC_PORT %q, daprd --dapr-grpc-port %q", pod.Name, got, grpcPort)
	}
	return nil
}

// checkPartitions: the K telemetry partitions the app subscribes to (TELEMETRY_PARTITIONS) are
// handled K at a time only if the pub/sub component lets K handler calls run at once
// (receiveMaximum ≥ K, components/pubsub-mqtt5/DESIGN.md); fewer slots serialise the partitions.
func checkPartitions(pod *corev1.Pod, c componentsapi.Component, receiveMaximum int) error {
	v, ok := env(container(pod, appContainer))["TELEMETRY_PARTITIONS"]
	if !ok {
		return nil
	}
	k, err := strconv.Atoi(v)
	if err != nil || k < 1 {
		return fmt.Errorf("pod %s: the app's TELEMETRY_PARTITIONS %q: want an integer ≥ 1", pod.Name, v)
	}
	if receiveMaximum < k {
		return fmt.Errorf("pod %s: the app's TELEMETRY_PARTITIONS %d > receiveMaximum %d of Component %s: want receiveMaximum ≥ the partitions",
			pod.Name, k, receiveMaximum, c.Name)
	}
	return nil
}

// props is the metadata daprd hands the component: its own conversion of the Component
// (pkg/runtime/meta, with {podName}, {namespace}, {appID} and {uuid} filled in), plus consumerID
// for pub/sub components, which daprd adds as the app id when absent (pkg/runtime/processor/pubsub).
func props(pod *corev1.Pod, c componentsapi.Component) map[string]string {
	appID := pod.Annotations["dapr.io/app-id"]
	m := meta.New(meta.Options{ID: appID, PodName: pod.Name, Namespace: pod.Namespace, Mode: modes.KubernetesMode})
	base, err := m.ToBaseMetadata(c)
	if err != nil {
		return map[string]string{"\x00error": err.Error()}
	}
	if strings.HasPrefix(c.Spec.Type, "pubsub.") && strings.TrimSpace(base.Properties["consumerID"]) == "" {
		base.Properties["consumerID"] = appID
	}
	return base.Properties
}

// parseComponent feeds a Component's metadata through its component's own parser; a key the
// component does not know is an error here (Init would only warn, and the setting would be lost).
func parseComponent(pod *corev1.Pod, c componentsapi.Component) (parsed, error) {
	props := props(pod, c)
	if e, ok := props["\x00error"]; ok {
		return parsed{}, fmt.Errorf("Component %s: daprd's metadata conversion: %s", c.Name, e)
	}
	var (
		p       parsed
		unknown []string
		err     error
	)
	switch {
	case strings.HasPrefix(c.Spec.Type, "pubsub."):
		var md pubsubmqtt5.Metadata
		md, unknown, err = pubsubmqtt5.ParseMetadata(props)
		p = parsed{Settings: md.Settings, kind: mqttconn.KindPubSub, shutdown: md.ShutdownTimeout, stateDir: md.StateDir,
			receiveMaximum: int(md.ReceiveMaximum)}
	case strings.HasPrefix(c.Spec.Type, "state."):
		var md statekv.Metadata
		md, unknown, err = statekv.ParseMetadata(props)
		p = parsed{Settings: md.Settings, kind: mqttconn.KindState}
	default:
		return p, fmt.Errorf("Component %s: type %s is neither pubsub.* nor state.*", c.Name, c.Spec.Type)
	}
	if err != nil {
		return p, fmt.Errorf("Component %s: %w", c.Name, err)
	}
	if len(unknown) > 0 {
		return p, fmt.Errorf("Component %s: metadata keys the component does not know: %q", c.Name, unknown)
	}
	return p, nil
}

// fileSource finds the volume behind path in container c and the path inside that volume.
func fileSource(pod *corev1.Pod, c *corev1.Container, path string) (*corev1.Volume, string, error) {
	var best *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if rel, err := filepath.Rel(m.MountPath, path); err == nil && !strings.HasPrefix(rel, "..") {
			if best == nil || len(m.MountPath) > len(best.MountPath) {
				best = &c.VolumeMounts[i]
			}
		}
	}
	if best == nil {
		return nil, "", fmt.Errorf("pod %s: %s is on no volume of container %s (its image has no such file)", pod.Name, path, c.Name)
	}
	v := volume(pod, best.Name)
	if v == nil {
		return nil, "", fmt.Errorf("pod %s: container %s mounts %s, which the pod lacks", pod.Name, c.Name, best.Name)
	}
	rel, _ := filepath.Rel(best.MountPath, path)
	return v, rel, nil
}

// checkFiles: the files the connection settings name are where the component's container can
// read them: the CA bundle from a ConfigMap or Secret, the token from a projected
// service-account token of that file name.
func checkFiles(pod *corev1.Pod, c componentsapi.Component, s mqttconn.Settings) error {
	ctr := container(pod, componentContainerName(c))
	if ctr == nil {
		return nil // reported by checkSockets
	}
	var errs []error
	if s.CAFile != "" {
		v, rel, err := fileSource(pod, ctr, s.CAFile)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("Component %s caFile: %w", c.Name, err))
		case v.ConfigMap == nil && v.Secret == nil:
			errs = append(errs, fmt.Errorf("Component %s caFile %s: volume %s is neither a ConfigMap nor a Secret", c.Name, s.CAFile, v.Name))
		case rel == ".":
			errs = append(errs, fmt.Errorf("Component %s caFile %s is the mount itself, want a key in it", c.Name, s.CAFile))
		}
	}
	if s.SATAuthFile != "" {
		if _, err := tokenAudience(pod, ctr, s.SATAuthFile); err != nil {
			errs = append(errs, fmt.Errorf("Component %s satAuthFile: %w", c.Name, err))
		}
	}
	return errors.Join(errs...)
}

// tokenAudience returns the audience of the projected service-account token at path.
func tokenAudience(pod *corev1.Pod, c *corev1.Container, path string) (string, error) {
	v, rel, err := fileSource(pod, c, path)
	if err != nil {
		return "", err
	}
	if v.Projected != nil {
		for _, src := range v.Projected.Sources {
			if t := src.ServiceAccountToken; t != nil && t.Path == rel {
				return t.Audience, nil
			}
		}
	}
	return "", fmt.Errorf("pod %s: %s (volume %s) is not a projected service-account token", pod.Name, path, v.Name)
}

// checkStateDir: the pub/sub component's record of filters is on a persistent volume claim, so it
// outlives the pod.
func checkStateDir(pod *corev1.Pod, c componentsapi.Component, dir string) error {
	ctr := container(pod, componentContainerName(c))
	if ctr == nil {
		return nil // reported by checkSockets
	}
	if dir == "" {
		return fmt.Errorf("Component %s: no stateDir (the default is inside the container's image)", c.Name)
	}
	v, _, err := fileSource(pod, ctr, dir)
	if err != nil {
		return fmt.Errorf("Component %s stateDir: %w", c.Name, err)
	}
	if v.PersistentVolumeClaim == nil {
		return fmt.Errorf("Component %s stateDir %s: volume %s is not a persistent volume claim (an emptyDir is lost with the pod)", c.Name, dir, v.Name)
	}
	return nil
}

// checkBroker: the broker the component dials is a Service of the overlay (or AIO's, which lives
// outside it).
func checkBroker(r *rendered, c componentsapi.Component, s mqttconn.Settings) error {
	u, err := s.BrokerURL()
	if err != nil {
		return fmt.Errorf("Component %s: %w", c.Name, err)
	}
	if u.Hostname() == mqttconn.AIODefaultHostname {
		return nil
	}
	svc := r.services[u.Hostname()]
	if svc == nil {
		return fmt.Errorf("Component %s dials %s: no Service %s in the overlay", c.Name, u, u.Hostname())
	}
	for _, p := range svc.Spec.Ports {
		if strconv.Itoa(int(p.Port)) == u.Port() {
			return nil
		}
	}
	return fmt.Errorf("Component %s dials %s: Service %s has no port %s", c.Name, u, svc.Name, u.Port())
}

// checkShutdown: the pod's grace period lets everything drain in order. The component stays up
// (preStop sleep) at least as long as daprd blocks its shutdown, daprd blocks at least as long as
// the app's handlers may run, and the grace period covers the preStop and the component's drain.
func checkShutdown(pod *corev1.Pod, c componentsapi.Component, drain time.Duration) error {
	ctr := container(pod, componentContainerName(c))
	if ctr == nil {
		return nil // reported by checkSockets
	}
	var preStop time.Duration
	if l := ctr.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	block := time.Duration(0)
	if v, ok := flag(container(pod, daprdContainer).Args, "--dapr-block-shutdown-duration"); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("daprd --dapr-block-shutdown-duration %q: %w", v, err)
		}
		block = d
	}
	appDrain := 30 * time.Second // the app's -shutdown-timeout default (app/README.md)
	if v, ok := flag(container(pod, appContainer).Args, "-shutdown-timeout"); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("app -shutdown-timeout %q: %w", v, err)
		}
		appDrain = d
	}
	grace := 30 * time.Second // Kubernetes' default
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	switch {
	case block < appDrain:
		return fmt.Errorf("pod %s: daprd blocks its shutdown %s, less than the app's -shutdown-timeout %s: handlers would lose the state store", pod.Name, block, appDrain)
	case preStop < block:
		return fmt.Errorf("pod %s: container %s sleeps %s before SIGTERM, less than daprd's block %s", pod.Name, ctr.Name, preStop, block)
	case grace < preStop+drain:
		return fmt.Errorf("pod %s: terminationGracePeriodSeconds %s < %s preStop + %s shutdownTimeout of %s", pod.Name, grace, preStop, drain, ctr.Name)
	}
	return nil
}

// clientID is the MQTT client id the component of this replica uses: with no clientID metadata
// the replica part is the host name, which in a pod is the pod's host name.
func clientID(pod *corev1.Pod, p parsed) (string, error) {
	s := p.Settings
	if s.ClientID == "" {
		s.ClientID = pod.Spec.Hostname
		if s.ClientID == "" {
			s.ClientID = pod.Name
		}
	}
	return s.ResolveClientID(p.kind)
}

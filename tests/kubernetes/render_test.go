// Package kubernetes validates the Kubernetes manifests in deploy/kubernetes offline, with the real
// libraries and no cluster: each overlay is rendered with kustomize's Go API, every object is
// decoded strictly (an unknown field is an error) into the Kubernetes API types and Dapr's
// Component type, Dapr's own sidecar injector patch code (pkg/injector/patcher, v1.16.0) runs on
// the app's pods, and each Component's metadata goes through the components' own parsers.
//
// A module of its own (kustomize, the Kubernetes API types and Dapr's injector stay out of the
// main module), run by `make test` without -race: nothing here is concurrent.
package kubernetes

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	componentsapi "github.com/dapr/dapr/pkg/apis/components/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// manifests is deploy/kubernetes, relative to this package.
var manifests = filepath.Join("..", "..", "deploy", "kubernetes")

// The overlays and what each must contain.
const (
	overlayEmbedded = "embedded-broker"
	overlayAIO      = "aio"
)

// rendered is one overlay's output, decoded into typed objects.
type rendered struct {
	namespace  string
	objects    []runtime.Object
	components []componentsapi.Component
	sets       map[string]*appsv1.StatefulSet
	services   map[string]*corev1.Service
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	deploys    map[string]*appsv1.Deployment
	bindings   map[string]*rbacv1.ClusterRoleBinding
}

// decoder decodes YAML or JSON strictly into the types of the scheme: an unknown or duplicate
// field is an error, and so is a kind the scheme does not know (a new kind in the manifests needs
// its type here, so it cannot go unchecked).
var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme, componentsapi.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// renderYAML runs kustomize's Go API on one overlay folder, as `kubectl apply -k` would, and
// returns each resulting object as YAML.
func renderYAML(t *testing.T, overlay string) [][]byte {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(manifests, overlay))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", overlay, err)
	}
	var docs [][]byte
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s as YAML: %v", overlay, r.CurId(), err)
		}
		docs = append(docs, y)
	}
	return docs
}

// render renders an overlay and decodes every object strictly.
func render(t *testing.T, overlay string) *rendered {
	t.Helper()
	r := &rendered{sets: map[string]*appsv1.StatefulSet{}, services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, deploys: map[string]*appsv1.Deployment{}, bindings: map[string]*rbacv1.ClusterRoleBinding{}}
	for _, doc := range renderYAML(t, overlay) {
		obj, err := decode(doc)
		if err != nil {
			t.Fatalf("%s: %v\n%s", overlay, err, doc)
		}
		r.objects = append(r.objects, obj)
		switch o := obj.(type) {
		case *componentsapi.Component:
			r.components = append(r.components, *o)
		case *appsv1.StatefulSet:
			r.sets[o.Name] = o
		case *corev1.Service:
			r.services[o.Name] = o
		case *corev1.ConfigMap:
			r.configMaps[o.Name] = o
		case *corev1.Secret:
			r.secrets[o.Name] = o
		case *appsv1.Deployment:
			r.deploys[o.Name] = o
		case *rbacv1.ClusterRoleBinding:
			r.bindings[o.Name] = o
		}
	}
	return r
}

// decode decodes one object strictly, and the JSON container in a Component's
// dapr.io/component-container annotation too: Dapr's injector reads it with a lenient
// json.Unmarshal, so a misspelt field there ("volumeMount") would silently vanish.
func decode(doc []byte) (runtime.Object, error) {
	obj, gvk, err := decoder.Decode(doc, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("strict decoding: %w", err)
	}
	if gvk.Kind == "" {
		return nil, fmt.Errorf("no kind in %q", doc)
	}
	if c, ok := obj.(*componentsapi.Component); ok {
		if _, err := componentContainer(*c); err != nil {
			return nil, err
		}
	}
	return obj, nil
}

// componentContainer decodes a Component's dapr.io/component-container annotation strictly.
func componentContainer(c componentsapi.Component) (*corev1.Container, error) {
	raw, ok := c.Annotations[annotationComponentContainer]
	if !ok {
		return nil, fmt.Errorf("Component %s has no %s annotation: the injector would add no container for it", c.Name, annotationComponentContainer)
	}
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	var ctr corev1.Container
	if err := dec.Decode(&ctr); err != nil {
		return nil, fmt.Errorf("Component %s: %s: %w", c.Name, annotationComponentContainer, err)
	}
	return &ctr, nil
}

// annotationComponentContainer is the Component annotation Dapr's injector reads
// (pkg/injector/annotations.KeyPluggableComponentContainer).
const annotationComponentContainer = "dapr.io/component-container"

// kindNames lists "Kind/name" of every object, sorted.
func (r *rendered) kindNames() []string {
	var out []string
	for _, o := range r.objects {
		m := o.(interface{ GetName() string })
		out = append(out, o.GetObjectKind().GroupVersionKind().Kind+"/"+m.GetName())
	}
	slices.Sort(out)
	return out
}

// TestOverlaysRender renders each overlay, decodes every object strictly and checks that each
// overlay holds what it is for, all in one namespace.
func TestOverlaysRender(t *testing.T) {
	for _, tc := range []struct {
		overlay, namespace string
		want               []string
	}{
		{overlayEmbedded, "mqdapr", []string{
			"ClusterRoleBinding/mqdapr-mqbroker-auth-delegator", "Component/kv", "Component/mqtt", "ConfigMap/mqbroker-acl",
			"Deployment/devicesim", "Namespace/mqdapr", "Secret/devicesim-mqtt", "Secret/mqbroker-passwd", "Service/connector",
			"Service/mqbroker", "ServiceAccount/connector", "ServiceAccount/mqbroker", "StatefulSet/connector", "StatefulSet/mqbroker",
		}},
		{overlayAIO, "azure-iot-operations", []string{
			"Component/kv", "Component/mqtt", "Service/connector", "ServiceAccount/connector", "StatefulSet/connector",
		}},
	} {
		t.Run(tc.overlay, func(t *testing.T) {
			r := render(t, tc.overlay)
			if got := r.kindNames(); !slices.Equal(got, tc.want) {
				t.Fatalf("objects %q, want %q", got, tc.want)
			}
			for _, o := range r.objects {
				m := o.(interface {
					GetName() string
					GetNamespace() string
				})
				kind := o.GetObjectKind().GroupVersionKind().Kind
				if kind == "Namespace" || kind == "ClusterRoleBinding" { // cluster-scoped
					continue
				}
				if m.GetNamespace() != tc.namespace {
					t.Errorf("%s/%s in namespace %q, want %q", kind, m.GetName(), m.GetNamespace(), tc.namespace)
				}
			}
		})
	}
}

// TestStrictDecodingRejects shows that the decoding above would catch a misspelt field: in a
// rendered StatefulSet, in a rendered Component, and in a Component's container annotation.
func TestStrictDecodingRejects(t *testing.T) {
	docs := renderYAML(t, overlayEmbedded)
	find := func(kind, name string) map[string]any {
		for _, d := range docs {
			obj, _, err := decoder.Decode(d, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if obj.GetObjectKind().GroupVersionKind().Kind != kind || obj.(interface{ GetName() string }).GetName() != name {
				continue
			}
			var m map[string]any
			j, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(j, &m); err != nil {
				t.Fatal(err)
			}
			return m
		}
		t.Fatalf("no %s/%s rendered", kind, name)
		return nil
	}
	mustFail := func(m map[string]any, want string) {
		t.Helper()
		doc, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		_, err = decode(doc)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("decode: %v, want an error naming %q", err, want)
		}
	}

	sts := find("StatefulSet", "connector")
	ctr := sts["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	ctr["imagePullPolcy"] = "IfNotPresent"
	mustFail(sts, "imagePullPolcy")

	comp := find("Component", "mqtt")
	comp["spec"].(map[string]any)["metdata"] = []any{}
	mustFail(comp, "metdata")

	// A kind the scheme does not know: its fields could not be checked.
	if _, err := decode([]byte("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: x}\n")); err == nil || !strings.Contains(err.Error(), "CronJob") {
		t.Fatalf("decode of an unregistered kind: %v, want an error naming it", err)
	}

	comp = find("Component", "mqtt")
	ann := comp["metadata"].(map[string]any)["annotations"].(map[string]any)
	ann[annotationComponentContainer] = strings.Replace(ann[annotationComponentContainer].(string), `"volumeMounts"`, `"volumeMount"`, 1)
	mustFail(comp, "volumeMount")
}

package kubernetes

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// repoRoot is the repository this module sits in.
const repoRoot = "../.."

// usherBin is the binary whose flags the manifests are checked against:
// $USHER_BIN, or one TestMain builds from the repository.
var usherBin string

func TestMain(m *testing.M) {
	usherBin = os.Getenv("USHER_BIN")
	if usherBin == "" {
		dir, err := os.MkdirTemp("", "usher-manifests")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		usherBin = filepath.Join(dir, "usher")
		build := exec.Command("go", "build", "-o", usherBin, "./cmd/usher")
		build.Dir = repoRoot
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build ./cmd/usher: %v\n%s", err, out)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// variant is one directory of manifests, parsed.
type variant struct {
	dir           string
	kustomization kustomization
	files         []string // the YAML files beside kustomization.yaml
	statefulSets  []*appsv1.StatefulSet
	deployments   []*appsv1.Deployment
	cronJobs      []*batchv1.CronJob
	services      []*corev1.Service
	claims        []*corev1.PersistentVolumeClaim
	budgets       []*policyv1.PodDisruptionBudget
}

// kustomization is the part of kustomize's Kustomization the manifests use;
// strict parsing makes any other field an error to look at.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

var documentSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// load parses every YAML file in dir strictly: a field the Kubernetes types
// do not have, or a kind the manifests should not hold, fails the test.
func load(t *testing.T, dir string) *variant {
	t.Helper()
	v := &variant{dir: dir}
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &v.kustomization); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		if filepath.Base(file) == "kustomization.yaml" {
			continue
		}
		v.files = append(v.files, filepath.Base(file))
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range documentSeparator.Split(string(raw), -1) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Fatalf("%s, document %d: %v", file, i+1, err)
			}
			if head.Kind == "" {
				continue // comments only
			}
			var obj any
			switch head.APIVersion + " " + head.Kind {
			case "apps/v1 StatefulSet":
				obj = appendNew(&v.statefulSets)
			case "apps/v1 Deployment":
				obj = appendNew(&v.deployments)
			case "batch/v1 CronJob":
				obj = appendNew(&v.cronJobs)
			case "v1 Service":
				obj = appendNew(&v.services)
			case "v1 PersistentVolumeClaim":
				obj = appendNew(&v.claims)
			case "policy/v1 PodDisruptionBudget":
				obj = appendNew(&v.budgets)
			default:
				t.Fatalf("%s, document %d: %s %s is not a kind this test knows", file, i+1, head.APIVersion, head.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s, document %d: %v", file, i+1, err)
			}
		}
	}
	return v
}

// appendNew appends a new zero T to list and returns it, to be decoded into.
func appendNew[T any](list *[]*T) *T {
	x := new(T)
	*list = append(*list, x)
	return x
}

// help is what `usher SUBCOMMAND -h` lists: flag names and the USHER_
// environment variables its text names.
type help struct {
	flags map[string]bool
	env   map[string]bool
}

var (
	helpFlag = regexp.MustCompile(`(?m)^ {1,8}(?:-\w, )?--?([a-z][a-z0-9-]*)`)
	helpEnv  = regexp.MustCompile(`USHER_[A-Z0-9_]+`)
)

func usherHelp(t *testing.T, sub string) help {
	t.Helper()
	// -h may exit non-zero; what it prints is what counts.
	out, _ := exec.Command(usherBin, sub, "-h").CombinedOutput()
	h := help{flags: map[string]bool{}, env: map[string]bool{}}
	for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
		h.flags[m[1]] = true
	}
	for _, e := range helpEnv.FindAllString(string(out), -1) {
		h.env[e] = true
	}
	if len(h.flags) == 0 {
		t.Fatalf("usher %s -h listed no flags:\n%s", sub, out)
	}
	return h
}

// invocation is a usher command line: the subcommand, --name=value flags and
// positional arguments.
type invocation struct {
	sub        string
	flags      map[string]string
	positional []string
}

func parseInvocation(args []string) invocation {
	inv := invocation{flags: map[string]string{}}
	if len(args) == 0 {
		return inv
	}
	inv.sub = args[0]
	for _, a := range args[1:] {
		if strings.HasPrefix(a, "-") {
			name, value, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			inv.flags[name] = value
		} else {
			inv.positional = append(inv.positional, a)
		}
	}
	return inv
}

// image is what deploy/Containerfile says of the image.
type image struct {
	entrypoint string // the binary's path
	uid        int64
	port       int32
}

func readContainerfile(t *testing.T) image {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "Containerfile"))
	if err != nil {
		t.Fatal(err)
	}
	find := func(re string) string {
		m := regexp.MustCompile(`(?m)` + re).FindStringSubmatch(string(raw))
		if m == nil {
			t.Fatalf("deploy/Containerfile has no line matching %s", re)
		}
		return m[1]
	}
	uid, _ := strconv.ParseInt(find(`^USER (\d+)`), 10, 64)
	port, _ := strconv.ParseInt(find(`^EXPOSE (\d+)$`), 10, 32)
	return image{entrypoint: find(`^ENTRYPOINT \["([^"]+)"\]$`), uid: uid, port: int32(port)}
}

// readinessService is the gRPC service whose health readiness must ask
// about: the one that turns NOT_SERVING while the server drains.
func readinessService(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "proto", "usher", "v1", "authorization.proto"))
	if err != nil {
		t.Fatal(err)
	}
	pkg := regexp.MustCompile(`(?m)^package ([\w.]+);`).FindSubmatch(raw)
	if pkg == nil || !regexp.MustCompile(`(?m)^service AuthorizationService \{`).Match(raw) {
		t.Fatal("proto/usher/v1/authorization.proto declares no package or no AuthorizationService")
	}
	return string(pkg[1]) + ".AuthorizationService"
}

// checker holds what every pod is checked against.
type checker struct {
	image    image
	help     map[string]help // by subcommand
	ready    string          // the readiness probe's service
	imageRef string          // the image name the kustomizations rewrite
}

func newChecker(t *testing.T) *checker {
	c := &checker{image: readContainerfile(t), help: map[string]help{}, ready: readinessService(t), imageRef: "usher"}
	for _, sub := range []string{"serve", "backup", "health"} {
		c.help[sub] = usherHelp(t, sub)
	}
	return c
}

// checkArgs checks that inv's subcommand exists and every flag and USHER_
// variable it is given is one that subcommand's help lists.
func (c *checker) checkArgs(t *testing.T, where string, inv invocation, env []corev1.EnvVar) {
	t.Helper()
	h, ok := c.help[inv.sub]
	if !ok {
		t.Errorf("%s: runs usher %q, not serve or backup", where, inv.sub)
		return
	}
	for name := range inv.flags {
		if !h.flags[name] {
			t.Errorf("%s: usher %s has no flag --%s", where, inv.sub, name)
		}
	}
	for _, e := range env {
		if strings.HasPrefix(e.Name, "USHER_") && !h.env[e.Name] {
			t.Errorf("%s: usher %s -h names no variable %s", where, inv.sub, e.Name)
		}
	}
}

// podChecks are the checks every pod template of the manifests passes.
func (c *checker) checkPod(t *testing.T, where string, pod corev1.PodSpec) {
	t.Helper()
	sc := pod.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != c.image.uid {
		t.Errorf("%s: the pod must run as non-root, as the image's user %d", where, c.image.uid)
	}
	if sc != nil && sc.FSGroup != nil && *sc.FSGroup != c.image.uid {
		t.Errorf("%s: fsGroup %d, not the image's group %d", where, *sc.FSGroup, c.image.uid)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: Usher needs no service account token: automountServiceAccountToken: false", where)
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Errorf("%s: enableServiceLinks: false, or a Service named usher puts USHER_PORT and the like in Usher's environment", where)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", where, len(pod.Containers))
	}
	ctr := pod.Containers[0]
	if ctr.Image != c.imageRef {
		t.Errorf("%s: image %q, want %q, which the kustomization sets", where, ctr.Image, c.imageRef)
	}
	if len(ctr.Command) != 0 {
		t.Errorf("%s: command %q replaces the image's entrypoint", where, ctr.Command)
	}
	csc := ctr.SecurityContext
	if csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem ||
		csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: the container must have a read-only root, no privilege escalation and no capabilities", where)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := ctr.Resources.Requests[r]; !ok {
			t.Errorf("%s: no %s request", where, r)
		}
	}
	if _, ok := ctr.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Errorf("%s: no memory limit", where)
	}
	inv := parseInvocation(ctr.Args)
	c.checkArgs(t, where, inv, ctr.Env)
	for _, e := range ctr.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == "" {
			t.Errorf("%s: %s names no Secret", where, e.Name)
		}
	}
	// Every file a flag names is on a volume, and on a Secret's item when
	// the Secret lists them.
	for _, name := range []string{"data", "callers", "tls-cert", "tls-key", "client-ca", "tls-ca",
		"etcd-ca", "etcd-cert", "etcd-key", "etcd-password-file", "livekit-key-file"} {
		if file, ok := inv.flags[name]; ok {
			checkOnVolume(t, where, "--"+name, file, ctr, pod)
		}
	}
}

// mountOf returns the mount that file lies under and file's path within it.
func mountOf(file string, ctr corev1.Container) (corev1.VolumeMount, string, bool) {
	for _, m := range ctr.VolumeMounts {
		if rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/"); ok {
			return m, rel, true
		}
	}
	return corev1.VolumeMount{}, "", false
}

func volumeNamed(pod corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

func checkOnVolume(t *testing.T, where, what, file string, ctr corev1.Container, pod corev1.PodSpec) {
	t.Helper()
	m, rel, ok := mountOf(file, ctr)
	if !ok {
		t.Errorf("%s: %s %s is on no volume (the root file system is read-only)", where, what, file)
		return
	}
	vol := volumeNamed(pod, m.Name)
	if vol == nil || vol.Secret == nil || len(vol.Secret.Items) == 0 {
		return // a claim (checked by kind) or a whole Secret
	}
	if !slices.ContainsFunc(vol.Secret.Items, func(k corev1.KeyToPath) bool { return k.Path == rel }) {
		t.Errorf("%s: %s %s: Secret %s projects no %s", where, what, file, vol.Secret.SecretName, rel)
	}
}

// checkServer checks the container that runs `usher serve`: its port, its
// probes, and its drain against the grace period.
func (c *checker) checkServer(t *testing.T, where string, pod corev1.PodSpec) invocation {
	t.Helper()
	ctr := pod.Containers[0]
	inv := parseInvocation(ctr.Args)
	if inv.sub != "serve" {
		t.Fatalf("%s: runs usher %q, want serve", where, inv.sub)
	}
	if len(inv.positional) != 0 {
		t.Errorf("%s: usher serve takes no arguments, given %q (flags are --name=value)", where, inv.positional)
	}
	_, portText, err := net.SplitHostPort(inv.flags["addr"])
	if err != nil {
		t.Fatalf("%s: --addr %q: %v", where, inv.flags["addr"], err)
	}
	port, _ := strconv.ParseInt(portText, 10, 32)
	_, metricsText, err := net.SplitHostPort(inv.flags["metrics-addr"])
	if err != nil {
		t.Fatalf("%s: --metrics-addr %q: %v (Prometheus must be able to scrape the server)", where, inv.flags["metrics-addr"], err)
	}
	metrics, _ := strconv.ParseInt(metricsText, 10, 32)
	if len(ctr.Ports) != 2 || ctr.Ports[0].Name != "grpc" || int64(ctr.Ports[0].ContainerPort) != port ||
		ctr.Ports[1].Name != "metrics" || int64(ctr.Ports[1].ContainerPort) != metrics {
		t.Errorf("%s: want container ports grpc %d, where --addr listens, and metrics %d, where --metrics-addr does; have %+v", where, port, metrics, ctr.Ports)
	}
	if int32(port) != c.image.port {
		t.Errorf("%s: serves on %d, the image exposes %d", where, port, c.image.port)
	}
	if _, ok := inv.flags["callers"]; !ok {
		t.Errorf("%s: serves without --callers", where)
	}
	if _, ok := inv.flags["allow-unauthenticated"]; ok {
		t.Errorf("%s: --allow-unauthenticated", where)
	}
	if _, ok := inv.flags["tls-cert"]; !ok {
		t.Errorf("%s: serves without --tls-cert: bearer tokens would cross the network in plaintext", where)
	}
	for name, p := range map[string]*corev1.Probe{"startup": ctr.StartupProbe, "readiness": ctr.ReadinessProbe, "liveness": ctr.LivenessProbe} {
		if p == nil {
			t.Errorf("%s: no %s probe", where, name)
			continue
		}
		service := c.checkProbe(t, fmt.Sprintf("%s, %s probe", where, name), p, int32(port), ctr, pod)
		if name == "readiness" && service != c.ready {
			t.Errorf("%s: the readiness probe asks about %q, want %s, which turns NOT_SERVING while draining", where, service, c.ready)
		}
	}
	drain, err := time.ParseDuration(inv.flags["drain"])
	if err != nil {
		t.Fatalf("%s: --drain %q: %v (give it, for the grace period to be checked against)", where, inv.flags["drain"], err)
	}
	bound := drain
	if ctr.Lifecycle != nil && ctr.Lifecycle.PreStop != nil {
		if ctr.Lifecycle.PreStop.Sleep == nil {
			t.Errorf("%s: a preStop hook other than sleep: the image has no shell", where)
		} else {
			bound += time.Duration(ctr.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= bound {
		t.Errorf("%s: terminationGracePeriodSeconds must be above the preStop sleep plus --drain, %v", where, bound)
	}
	return inv
}

// checkProbe checks that a probe asks grpc.health.v1 on the serving port,
// natively or through `usher health`, and returns the service it asks about.
func (c *checker) checkProbe(t *testing.T, where string, p *corev1.Probe, port int32, ctr corev1.Container, pod corev1.PodSpec) string {
	t.Helper()
	if p.TimeoutSeconds == 0 || p.PeriodSeconds == 0 || p.FailureThreshold == 0 {
		t.Errorf("%s: give timeoutSeconds, periodSeconds and failureThreshold", where)
	}
	switch {
	case p.GRPC != nil:
		if p.GRPC.Port != port {
			t.Errorf("%s: gRPC probe on port %d, the server listens on %d", where, p.GRPC.Port, port)
		}
		if p.GRPC.Service == nil {
			return ""
		}
		return *p.GRPC.Service
	case p.Exec != nil:
		cmd := p.Exec.Command
		if len(cmd) < 2 || cmd[0] != c.image.entrypoint || cmd[1] != "health" {
			t.Errorf("%s: runs %q, want %s health", where, cmd, c.image.entrypoint)
			return ""
		}
		inv := parseInvocation(cmd[1:])
		c.checkArgs(t, where, inv, nil)
		host, probePort, err := net.SplitHostPort(inv.flags["addr"])
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() || probePort != strconv.Itoa(int(port)) {
			t.Errorf("%s: --addr %q, want the serving port %d on loopback", where, inv.flags["addr"], port)
		}
		if ca, ok := inv.flags["tls-ca"]; !ok {
			t.Errorf("%s: --tls-ca missing: the server speaks TLS", where)
		} else {
			checkOnVolume(t, where, "--tls-ca", ca, ctr, pod)
		}
		timeout, err := time.ParseDuration(inv.flags["timeout"])
		if err != nil || timeout >= time.Duration(p.TimeoutSeconds)*time.Second {
			t.Errorf("%s: --timeout %q must be under the probe's timeoutSeconds %d", where, inv.flags["timeout"], p.TimeoutSeconds)
		}
		return inv.flags["service"]
	default:
		t.Errorf("%s: neither a gRPC probe nor usher health", where)
		return ""
	}
}

func (v *variant) service(name string) *corev1.Service {
	for _, s := range v.services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// checkServices checks that every Service selects the server's pods on its
// grpc port.
func (v *variant) checkServices(t *testing.T, podLabels map[string]string) {
	t.Helper()
	if len(v.services) == 0 {
		t.Errorf("%s: no Service", v.dir)
	}
	for _, s := range v.services {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(podLabels)) {
			t.Errorf("%s: Service %s does not select the server's pods", v.dir, s.Name)
		}
		if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].TargetPort.String() != "grpc" {
			t.Errorf("%s: Service %s: want one port with targetPort grpc", v.dir, s.Name)
		}
	}
}

func TestKustomizationsListEveryManifest(t *testing.T) {
	for _, dir := range []string{"single", "etcd"} {
		v := load(t, dir)
		k := v.kustomization
		if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
			t.Errorf("%s/kustomization.yaml: %s %s", dir, k.APIVersion, k.Kind)
		}
		if got := slices.Sorted(slices.Values(k.Resources)); !slices.Equal(got, v.files) {
			t.Errorf("%s/kustomization.yaml lists %q; the directory holds %q", dir, got, v.files)
		}
		if len(k.Images) != 1 || k.Images[0].Name != "usher" || k.Images[0].NewName == "" {
			t.Errorf("%s/kustomization.yaml: want one images entry that sets where the usher image is", dir)
		}
	}
}

func TestSingleNodeManifests(t *testing.T) {
	c := newChecker(t)
	v := load(t, "single")
	if len(v.statefulSets) != 1 || len(v.deployments) != 0 {
		t.Fatalf("single: want one StatefulSet and no Deployment")
	}
	ss := v.statefulSets[0]
	where := "single: StatefulSet " + ss.Name
	// bbolt is single-writer: more replicas would be separate authorities.
	if ss.Spec.Replicas == nil || *ss.Spec.Replicas != 1 {
		t.Errorf("%s: replicas must be exactly 1", where)
	}
	pod := ss.Spec.Template.Spec
	c.checkPod(t, where, pod)
	inv := c.checkServer(t, where, pod)
	if _, ok := inv.flags["etcd"]; ok {
		t.Errorf("%s: passes --etcd", where)
	}
	data := inv.flags["data"]
	if data == "" {
		t.Fatalf("%s: no --data", where)
	}
	m, _, ok := mountOf(data, pod.Containers[0])
	if !ok || m.MountPath != path.Dir(data) {
		t.Errorf("%s: want a volume mounted at %s, the --data directory", where, path.Dir(data))
	} else if !slices.ContainsFunc(ss.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == m.Name }) {
		t.Errorf("%s: %s is mounted from %s, not a volumeClaimTemplate", where, m.MountPath, m.Name)
	}
	for _, p := range ss.Spec.VolumeClaimTemplates {
		if !slices.Equal(p.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
			t.Errorf("%s: claim %s must be ReadWriteOnce", where, p.Name)
		}
	}
	if v.service(ss.Spec.ServiceName) == nil {
		t.Errorf("%s: serviceName %q names no Service here", where, ss.Spec.ServiceName)
	}
	sel, err := metav1.LabelSelectorAsSelector(ss.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(ss.Spec.Template.Labels)) {
		t.Errorf("%s: the selector does not select its own pods", where)
	}
	v.checkServices(t, ss.Spec.Template.Labels)

	if len(v.cronJobs) != 1 {
		t.Fatalf("single: want one backup CronJob, have %d", len(v.cronJobs))
	}
	cj := v.cronJobs[0]
	where = "single: CronJob " + cj.Name
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		t.Errorf("%s: concurrencyPolicy must be Forbid: two backups would race for the same volume", where)
	}
	job := cj.Spec.JobTemplate.Spec.Template.Spec
	c.checkPod(t, where, job)
	b := parseInvocation(job.Containers[0].Args)
	if b.sub != "backup" || len(b.positional) != 1 {
		t.Fatalf("%s: want usher backup [flags] FILE, have %q", where, job.Containers[0].Args)
	}
	host, port, err := net.SplitHostPort(b.flags["addr"])
	if s := v.service(host); err != nil || s == nil || strconv.Itoa(int(s.Spec.Ports[0].Port)) != port {
		t.Errorf("%s: --addr %q is not a Service here and its port", where, b.flags["addr"])
	}
	if _, ok := b.flags["tls-ca"]; !ok {
		t.Errorf("%s: no --tls-ca: the server speaks TLS", where)
	}
	if !slices.ContainsFunc(job.Containers[0].Env, func(e corev1.EnvVar) bool {
		return e.Name == "USHER_TOKEN" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
	}) {
		t.Errorf("%s: USHER_TOKEN must come from a Secret: Backup is an admin call", where)
	}
	file := b.positional[0]
	bm, _, ok := mountOf(file, job.Containers[0])
	if vol := volumeNamed(job, bm.Name); !ok || vol == nil || vol.PersistentVolumeClaim == nil {
		t.Errorf("%s: the backup %s is not written to a PersistentVolumeClaim", where, file)
	} else if !slices.ContainsFunc(v.claims, func(p *corev1.PersistentVolumeClaim) bool { return p.Name == vol.PersistentVolumeClaim.ClaimName }) {
		t.Errorf("%s: claim %s is not declared here", where, vol.PersistentVolumeClaim.ClaimName)
	}
}

func TestEtcdManifests(t *testing.T) {
	c := newChecker(t)
	v := load(t, "etcd")
	if len(v.deployments) != 1 || len(v.statefulSets) != 0 || len(v.claims) != 0 || len(v.cronJobs) != 0 {
		t.Fatalf("etcd: want one Deployment, and no StatefulSet, claim or backup CronJob (the Backup RPC copies a bbolt file)")
	}
	d := v.deployments[0]
	where := "etcd: Deployment " + d.Name
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("%s: want replicas, at least 2", where)
	}
	pod := d.Spec.Template.Spec
	c.checkPod(t, where, pod)
	inv := c.checkServer(t, where, pod)
	if inv.flags["etcd"] == "" {
		t.Errorf("%s: no --etcd endpoints", where)
	}
	if _, ok := inv.flags["data"]; ok {
		t.Errorf("%s: passes --data: a replica keeps no file", where)
	}
	// No data volume: nothing mounted where the image keeps its data, and
	// no claim.
	for _, vol := range pod.Volumes {
		if vol.PersistentVolumeClaim != nil || vol.Ephemeral != nil || vol.HostPath != nil {
			t.Errorf("%s: volume %s holds data; the data is in etcd", where, vol.Name)
		}
	}
	for _, m := range pod.Containers[0].VolumeMounts {
		if m.MountPath == "/var/lib/usher" {
			t.Errorf("%s: a volume at /var/lib/usher, the image's data directory", where)
		}
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("%s: the selector does not select its own pods", where)
	}
	v.checkServices(t, d.Spec.Template.Labels)
	if len(v.budgets) != 1 {
		t.Fatalf("etcd: want one PodDisruptionBudget, have %d", len(v.budgets))
	}
	pdb := v.budgets[0]
	sel, err = metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("etcd: PodDisruptionBudget %s does not select the replicas", pdb.Name)
	}
	if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
		t.Errorf("etcd: PodDisruptionBudget %s sets neither maxUnavailable nor minAvailable", pdb.Name)
	}
}

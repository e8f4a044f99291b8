package main

// The router scale phase's cluster: its namespace, pods and captures in
// the kube-apiserver, and the router's configuration (router_scale.go).

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v3 "github.com/capstream/capstream/schemas/v3"
)

// connect builds the clients, installs the CRD and creates the namespace.
func (e *routerScaleEnv) connect(ctx context.Context) error {
	var err error
	if e.kubeClients, err = connectKube(ctx, 2000, 4000); err != nil { // the harness is bounded by its concurrency
		return err
	}
	return e.createNamespace(ctx, e.ns, map[string]string{"bench": "router-scale"})
}

// podObject is a pod as a workload controller makes it: annotations, two
// containers with env, mounts and resources, volumes.
func (e *routerScaleEnv) podObject(p *rsPod) *corev1.Pod {
	ann := map[string]string{}
	for i := range 8 {
		ann[fmt.Sprintf("example.com/annotation-%d", i)] = fmt.Sprintf("%s-value-%d", p.app, i)
	}
	var env []corev1.EnvVar
	for i := range 12 {
		env = append(env, corev1.EnvVar{Name: fmt.Sprintf("CONFIG_%02d", i), Value: fmt.Sprintf("configuration-value-%d", i)})
	}
	ctr := func(name string) corev1.Container {
		return corev1.Container{Name: name, Image: "registry.k8s.io/pause:3.10", Env: env,
			VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/config"}}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: e.ns, Labels: p.labels(), Annotations: ann},
		Spec: corev1.PodSpec{NodeName: p.node, ServiceAccountName: "default",
			Containers: []corev1.Container{ctr("app"), ctr("sidecar")},
			Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
				ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: p.app}}}}}},
	}
}

// createPods creates every pod and sets it Running with an IP,
// -router-scale-concurrency calls at a time.
func (e *routerScaleEnv) createPods(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.o.RouterScaleConcurrency)
	pods := e.kube.CoreV1().Pods(e.ns)
	var done atomic.Int64
	begin := time.Now()
	for j, p := range e.pods {
		g.Go(func() error {
			pod, err := pods.Create(gctx, e.podObject(p), metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("create pod %s: %w", p.name, err)
			}
			ip := fmt.Sprintf("10.%d.%d.%d", 64+j>>16, (j>>8)&255, j&255)
			pod.Status.Phase, pod.Status.PodIP, pod.Status.PodIPs = corev1.PodRunning, ip, []corev1.PodIP{{IP: ip}}
			if _, err := pods.UpdateStatus(gctx, pod, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("pod %s status: %w", p.name, err)
			}
			if n := done.Add(1); n%2000 == 0 {
				fmt.Fprintf(e.o.Log, "bench: router scale: %d of %d pods, %.0f/s\n", n, len(e.pods), float64(n)/time.Since(begin).Seconds())
			}
			return nil
		})
	}
	return g.Wait()
}

func (e *routerScaleEnv) createCaptures(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.o.RouterScaleConcurrency)
	for _, c := range e.captures {
		g.Go(func() error { return e.createCapture(gctx, e.ns, c.name, c.sel) })
	}
	return g.Wait()
}

// cleanup deletes the captures and the pods one by one (the dev API
// server never finishes a namespace's deletion, so its objects would
// stay), then the namespace; on a context of its own, so it runs after an
// interrupt too.
func (e *routerScaleEnv) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	zero := int64(0)
	del := func(name string, f func(context.Context, string, metav1.DeleteOptions) error) func() error {
		return func() error {
			if err := f(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete %s: %w", name, err)
			}
			return nil
		}
	}
	g := new(errgroup.Group)
	g.SetLimit(e.o.RouterScaleConcurrency)
	for _, c := range e.captures {
		g.Go(del(c.name, func(ctx context.Context, name string, o metav1.DeleteOptions) error {
			return e.dyn.Resource(v3.Resource).Namespace(e.ns).Delete(ctx, name, o)
		}))
	}
	for _, p := range e.pods {
		g.Go(del(p.name, e.kube.CoreV1().Pods(e.ns).Delete))
	}
	if err := g.Wait(); err != nil {
		fmt.Fprintf(e.o.Log, "bench: router scale cleanup: %v\n", err)
	}
	if err := e.kube.CoreV1().Namespaces().Delete(ctx, e.ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		fmt.Fprintf(e.o.Log, "bench: delete namespace %s: %v\n", e.ns, err)
	}
}

// routerConfig is the router's: the connections, the private namespace,
// no election and a client rate that lets it write 500 statuses quickly;
// every other setting is the default.
func (e *routerScaleEnv) routerConfig(natsURL string) string {
	return e.routerYAML(natsURL, e.ns, "  qps: 200\n  burst: 400\n", "")
}

package netsim

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// nodeIP is the simulated node's address, reported as the pods' host IP.
const nodeIP = "10.66.255.1"

// registerPods creates the namespace (when missing) and one Pod per wired
// pod, scheduled on node and marked Running with its address, which is
// what the router needs to make it a workload endpoint. There is no
// kubelet: the status is written directly. A pod left by an earlier run is
// replaced, since nodeName cannot be changed in place.
func registerPods(ctx context.Context, kube kubernetes.Interface, node string, pods []*PodNet) error {
	if len(pods) == 0 {
		return nil
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: pods[0].Namespace}}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", ns.Name, err)
	}
	for _, p := range pods {
		if err := deletePod(ctx, kube, p); err != nil {
			return err
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels},
			Spec: corev1.PodSpec{
				NodeName:   node,
				Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
			},
		}
		created, err := kube.CoreV1().Pods(p.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		now := metav1.Now()
		created.Status = corev1.PodStatus{
			Phase:     corev1.PodRunning,
			HostIP:    nodeIP,
			PodIP:     p.IP.String(),
			PodIPs:    []corev1.PodIP{{IP: p.IP.String()}},
			StartTime: &now,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			},
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: "app", Image: pod.Spec.Containers[0].Image, Ready: true,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
			}},
		}
		if _, err := kube.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("mark pod %s/%s running: %w", p.Namespace, p.Name, err)
		}
	}
	return nil
}

// unregisterPods deletes the pods registerPods made. The namespace stays:
// without a controller manager a deleted namespace never finishes
// terminating, and a later run could not use it.
func unregisterPods(ctx context.Context, kube kubernetes.Interface, pods []*PodNet) error {
	var errs []error
	for _, p := range pods {
		errs = append(errs, deletePod(ctx, kube, p))
	}
	return errors.Join(errs...)
}

// deletePod deletes a pod at once (no kubelet will ever confirm a graceful
// deletion) and waits until it is gone, so a Create can follow.
func deletePod(ctx context.Context, kube kubernetes.Interface, p *PodNet) error {
	pods := kube.CoreV1().Pods(p.Namespace)
	zero := int64(0)
	err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("delete pod %s/%s: still present after 10s", p.Namespace, p.Name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("delete pod %s/%s: %w", p.Namespace, p.Name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

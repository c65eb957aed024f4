package proc

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseCgroup(t *testing.T) {
	const cid = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809"
	cases := []struct {
		name string
		in   string
		want Cgroup
	}{
		{
			name: "k8s systemd driver cgroup v2 containerd",
			in:   "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-" + cid + ".scope\n",
			want: Cgroup{Path: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-" + cid + ".scope",
				ContainerID: cid, Runtime: "containerd", PodUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
		},
		{
			name: "k8s cgroupfs driver v1 hybrid",
			in: "12:memory:/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/" + cid + "\n" +
				"1:name=systemd:/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/" + cid + "\n0::/\n",
			want: Cgroup{Path: "/", ContainerID: cid, PodUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
		},
		{
			name: "k8s cri-o",
			in:   "0::/kubepods.slice/kubepods-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/crio-" + cid + ".scope\n",
			want: Cgroup{Path: "/kubepods.slice/kubepods-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/crio-" + cid + ".scope",
				ContainerID: cid, Runtime: "crio", PodUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
		},
		{
			name: "docker v2 systemd",
			in:   "0::/system.slice/docker-" + cid + ".scope\n",
			want: Cgroup{Path: "/system.slice/docker-" + cid + ".scope", ContainerID: cid, Runtime: "docker"},
		},
		{
			name: "docker v1 cgroupfs",
			in:   "4:memory:/docker/" + cid + "\n3:cpu,cpuacct:/docker/" + cid + "\n",
			want: Cgroup{Path: "/docker/" + cid, ContainerID: cid, Runtime: "docker"},
		},
		{
			name: "systemd service",
			in:   "0::/system.slice/nginx.service\n",
			want: Cgroup{Path: "/system.slice/nginx.service", SystemdUnit: "nginx.service"},
		},
		{
			name: "user session is not a service",
			in:   "0::/user.slice/user-1000.slice/user@1000.service/app.slice/foo.scope\n",
			want: Cgroup{Path: "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.scope"},
		},
		{
			name: "this machine's hybrid layout",
			in:   "9:name=systemd:/\n4:memory:/process_api/2673ed6cefabaee39aab9e0e2ffa9ef5\n0::/\n",
			want: Cgroup{Path: "/"},
		},
		{name: "garbage", in: "nonsense\n::\n", want: Cgroup{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseCgroup(tc.in)
			if got != tc.want {
				t.Fatalf("ParseCgroup:\n got  %+v\n want %+v", got, tc.want)
			}
		})
	}
}

func TestServiceName(t *testing.T) {
	const cid = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809"
	pod := Cgroup{PodUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", ContainerID: cid}
	cases := []struct {
		name       string
		env        map[string]string
		cg         Cgroup
		exe        string
		want, from string
	}{
		{"env wins", map[string]string{"OTEL_SERVICE_NAME": "checkout", "HOSTNAME": "api-7d9f8b6c4-x2x9z"}, pod, "java", "checkout", "env"},
		{"deployment pod", map[string]string{"HOSTNAME": "api-7d9f8b6c4-x2x9z"}, pod, "java", "api", "pod"},
		{"statefulset pod", map[string]string{"HOSTNAME": "postgres-0"}, pod, "postgres", "postgres", "pod"},
		{"pod without hostname", nil, pod, "x", "pod-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "pod"},
		{"docker default hostname", map[string]string{"HOSTNAME": cid[:12]}, Cgroup{ContainerID: cid}, "nginx", "container-" + cid[:12], "container"},
		{"docker named host", map[string]string{"HOSTNAME": "web"}, Cgroup{ContainerID: cid}, "nginx", "web", "container"},
		{"systemd", nil, Cgroup{SystemdUnit: "nginx.service"}, "nginx", "nginx", "systemd"},
		{"exe", nil, Cgroup{}, "redis-server", "redis-server", "exe"},
		{"blank env ignored", map[string]string{"OTEL_SERVICE_NAME": "  "}, Cgroup{}, "bash", "bash", "exe"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, from := ServiceName(tc.env, tc.cg, tc.exe)
			if got != tc.want || from != tc.from {
				t.Fatalf("ServiceName = %q (%s), want %q (%s)", got, from, tc.want, tc.from)
			}
		})
	}
}

func TestResolverReadsProcfs(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "42")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("cgroup", "0::/system.slice/payments.service\n")
	write("comm", "payd\n")
	write("environ", "PATH=/bin\x00LANG=C\x00")
	r := NewResolver(root)
	info := r.Lookup(42)
	if info.ServiceName != "payments" || info.Source != "systemd" || info.Exe != "payd" {
		t.Fatalf("Lookup = %+v", info)
	}
	// Cached until forgotten: a changed environ is not seen...
	write("environ", "OTEL_SERVICE_NAME=pay\x00")
	if got := r.Lookup(42).ServiceName; got != "payments" {
		t.Fatalf("cached lookup = %q", got)
	}
	// ...and is after Forget (PID reuse).
	r.Forget(42)
	if got := r.Lookup(42).ServiceName; got != "pay" {
		t.Fatalf("after Forget = %q", got)
	}
	if got := r.Lookup(999).ServiceName; got != "pid-999" {
		t.Fatalf("missing pid = %q", got)
	}
	// An exited process is named by the comm the kernel reported.
	if got := r.LookupHint(1000, "psql"); got.ServiceName != "psql" || got.Source != "comm" {
		t.Fatalf("exited pid with comm = %+v", got)
	}
}

func TestResolverSelf(t *testing.T) {
	r := NewResolver("/proc")
	info := r.Lookup(uint32(os.Getpid()))
	if info.ServiceName == "" || info.Exe == "" {
		t.Fatalf("self lookup = %+v", info)
	}
}

func TestProgramName(t *testing.T) {
	cases := map[string]string{
		"/usr/bin/redis-server 127.0.0.1:6379\x00":  "redis-server",
		"redis-server *:6379\x00\x00":               "redis-server",
		"postgres: checkpointer \x00":               "postgres",
		"nginx: worker process\x00":                 "nginx",
		"/usr/bin/python3\x00-m\x00http.server\x00": "python3",
		"./api\x00--port=80\x00":                    "api",
		"":                                          "",
		"\x00":                                      "",
	}
	for in, want := range cases {
		if got := ProgramName([]byte(in)); got != want {
			t.Errorf("ProgramName(%q) = %q, want %q", in, got, want)
		}
	}
}

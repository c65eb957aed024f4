// Package proc attributes processes to workloads: it parses /proc/<pid>/cgroup
// (Kubernetes, Docker, containerd, systemd; cgroup v1, v2 and hybrid) and
// picks the service name users expect for a process.
package proc

import (
	"bufio"
	"regexp"
	"strings"
)

// Cgroup is what a process's cgroup paths say about where it runs.
type Cgroup struct {
	// Path is the most specific cgroup path seen (v2 unified path when present).
	Path string
	// ContainerID is the full container ID (64 hex chars) when the process runs
	// in a container.
	ContainerID string
	// Runtime is "docker", "containerd", "crio" or "" when unknown.
	Runtime string
	// PodUID is the Kubernetes pod UID (dashes restored) when the process
	// runs in a Kubernetes pod.
	PodUID string
	// SystemdUnit is the systemd service unit (e.g. "nginx.service") for
	// processes started by systemd outside containers.
	SystemdUnit string
}

var (
	// 64-hex container IDs, optionally prefixed by a runtime scope name
	// ("docker-", "cri-containerd-", "crio-") and suffixed by ".scope".
	containerRe = regexp.MustCompile(`(?:^|[/-])(docker|cri-containerd|crio|containerd)?-?([0-9a-f]{64})(?:\.scope)?$`)
	// Pod UIDs appear as "pod<uid>" (cgroupfs driver, dashes kept) or
	// "kubepods-<qos>-pod<uid with underscores>.slice" (systemd driver).
	podRe  = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?(?:/|$)`)
	unitRe = regexp.MustCompile(`/([^/]+\.service)(?:/|$)`)
)

// ParseCgroup parses the content of /proc/<pid>/cgroup. Lines look like
// "hierarchy-ID:controller-list:path"; v2 has a single "0::path" line and
// hybrid hosts have both. Every path is examined because on hybrid hosts the
// container may only be visible in some v1 hierarchies.
func ParseCgroup(content string) Cgroup {
	var cg Cgroup
	sc := bufio.NewScanner(strings.NewReader(content))
	for sc.Scan() {
		line := sc.Text()
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		path := parts[2]
		if parts[0] == "0" && parts[1] == "" {
			cg.Path = path
		} else if cg.Path == "" && path != "/" {
			cg.Path = path
		}
		parsePath(path, &cg)
	}
	return cg
}

func parsePath(path string, cg *Cgroup) {
	if cg.PodUID == "" {
		if m := podRe.FindStringSubmatch(path); m != nil {
			cg.PodUID = strings.ReplaceAll(m[1], "_", "-")
		}
	}
	if cg.ContainerID == "" {
		if m := containerRe.FindStringSubmatch(path); m != nil {
			cg.ContainerID = m[2]
			switch m[1] {
			case "docker":
				cg.Runtime = "docker"
			case "cri-containerd", "containerd":
				cg.Runtime = "containerd"
			case "crio":
				cg.Runtime = "crio"
			default:
				// cgroupfs drivers name the directory by the bare ID; the parent
				// tells which runtime created it.
				switch {
				case strings.Contains(path, "/docker/"):
					cg.Runtime = "docker"
				case strings.Contains(path, "containerd"):
					cg.Runtime = "containerd"
				case strings.Contains(path, "crio"):
					cg.Runtime = "crio"
				}
			}
		}
	}
	if cg.SystemdUnit == "" && cg.ContainerID == "" {
		if m := unitRe.FindStringSubmatch(path); m != nil {
			unit := m[1]
			// Runtime daemons' own units are not the workload; user session
			// units (user@1000.service) are not services either.
			if !strings.HasPrefix(unit, "user@") {
				cg.SystemdUnit = unit
			}
		}
	}
}

package main

import (
	"github.com/grafana/dskit/modules"
	"github.com/grafana/dskit/services"
)

// targetableModules are the roles -target accepts.
var targetableModules = []string{All}

// registerModules declares every module and its dependencies; dskit initialises a target's
// dependencies first and stops them last.
func (v *vigil) registerModules() *modules.Manager {
	mm := modules.NewManager(logutilGoKit(v))
	mm.RegisterModule(Server, v.initServer, modules.UserInvisibleModule)
	mm.RegisterModule(MemberlistKV, v.initMemberlistKV, modules.UserInvisibleModule)
	mm.RegisterModule(Overrides, v.initOverrides, modules.UserInvisibleModule)
	mm.RegisterModule(Bucket, v.initBucket, modules.UserInvisibleModule)
	mm.RegisterModule(All, nil)

	deps := map[string][]string{
		MemberlistKV: {Server},
		Overrides:    {Server},
		Bucket:       {Server},
		All:          {MemberlistKV, Overrides, Bucket},
	}
	for mod, d := range deps {
		if err := mm.AddDependency(mod, d...); err != nil {
			panic(err) // a wiring bug, caught by every test that starts the binary
		}
	}
	return mm
}

var _ services.Service

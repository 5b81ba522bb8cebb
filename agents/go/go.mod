module github.com/meshward/meshward/agents/go

go 1.19

# Compose services: running=<project>/<service> when up, and healthy where
# they declare a healthcheck (part of the probe, see remote.rs).
command -v docker >/dev/null 2>&1 && docker ps --filter label=com.docker.compose.project --format '{{.Label "com.docker.compose.project"}}/{{.Label "com.docker.compose.service"}} {{.Status}}' 2>/dev/null | while read -r s rest; do case "$rest" in *"(unhealthy)"*|*"(health: starting)"*) ;; *) echo "running=$s" ;; esac; done

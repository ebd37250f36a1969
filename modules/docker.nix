# Docker is the application runtime on every Pi.
{ ... }:
{
  virtualisation.docker.enable = true;
  virtualisation.oci-containers.backend = "docker";
}

# What is special about rpi-zero-01. Everything every Pi shares comes from
# modules/; its name, model and address come from hosts/fleet.toml.
{ ... }:
{
  # Add this Pi's own settings here, for example its containers:
  # virtualisation.oci-containers.containers.whoami = {
  #   image = "traefik/whoami@sha256:<digest>";
  #   ports = [ "8080:80" ];
  # };
}

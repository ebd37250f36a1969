# Host name from the inventory.
{ host, ... }:
{
  networking.hostName = host.name;
}

# SSH: the only way in. Keys come from keys/authorized_keys via the inventory.
{ inventory, host, ... }:
{
  services.openssh.enable = true;
  users.users.root.openssh.authorizedKeys.keys = inventory.admin_keys;
}

"""The service layer: engine instances register in etcd, routers read the live set and forward requests."""

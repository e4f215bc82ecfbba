output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "IPv4 CIDR of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Private subnet IDs, one per availability zone (nodes, RDS, Redis)."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Public subnet IDs, one per availability zone (NAT, internet-facing load balancers)."
  value       = aws_subnet.public[*].id
}

output "nat_public_ips" {
  description = "Public IPs of the NAT gateways: the addresses the cluster's egress comes from."
  value       = aws_eip.nat[*].public_ip
}

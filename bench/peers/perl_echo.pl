#!/usr/bin/perl
# bench/peers/perl_echo.pl PORT: the echo server a Perl user writes first:
# IO::Socket::INET and IO::Select (perl-base), one process, select(2).
# Bytes are echoed as read (64 KiB reads); what the kernel does not take at
# once waits in a per-socket buffer for writability, so a 16 KiB echo is
# never cut short.
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Socket qw(IPPROTO_TCP TCP_NODELAY);

my $port = shift // 7005;
my $srv = IO::Socket::INET->new(
  LocalAddr => '127.0.0.1', LocalPort => $port, Listen => SOMAXCONN,
  ReuseAddr => 1, Blocking => 0) or die "perl_echo: listen on $port: $!\n";
my $rd = IO::Select->new($srv);
my $wr = IO::Select->new;
my %out;    # fileno -> bytes still to write
$SIG{PIPE} = 'IGNORE';
print STDERR "listening on 127.0.0.1:$port\n";

sub drop {
  my ($fh) = @_;
  delete $out{fileno $fh};
  $rd->remove($fh);
  $wr->remove($fh);
  close $fh;
}

sub flush_out {
  my ($fh) = @_;
  my $fd = fileno $fh;
  my $n = syswrite($fh, $out{$fd});
  if (!defined $n) {
    return 1 if $!{EAGAIN} || $!{EWOULDBLOCK} || $!{EINTR};
    drop($fh);
    return 0;
  }
  substr($out{$fd}, 0, $n, '');
  if (length $out{$fd}) {
    $wr->add($fh) unless $wr->exists($fh);
  } else {
    delete $out{$fd};
    $wr->remove($fh);
  }
  return 1;
}

while (1) {
  my ($r, $w) = IO::Select->select($rd, $wr, undef);
  next unless $r;
  for my $fh (@{ $w || [] }) { flush_out($fh) if exists $out{fileno $fh}; }
  for my $fh (@$r) {
    if ($fh == $srv) {
      while (my $c = $srv->accept) {
        $c->blocking(0);
        setsockopt($c, IPPROTO_TCP, TCP_NODELAY, 1);
        $rd->add($c);
      }
      next;
    }
    next unless defined fileno $fh;
    my $n = sysread($fh, my $buf, 65536);
    if (!defined $n) {
      next if $!{EAGAIN} || $!{EWOULDBLOCK} || $!{EINTR};
      drop($fh);
      next;
    }
    if ($n == 0) { drop($fh); next; }
    my $fd = fileno $fh;
    $out{$fd} .= $buf;
    flush_out($fh) unless $wr->exists($fh);
  }
}

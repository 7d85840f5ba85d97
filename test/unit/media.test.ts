import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bootFilesFromConfig } from '../../src/iso/media.js';

test('the kernel and initrd named by an isolinux configuration', () => {
  const txt = 'label install\n\tmenu label ^Install\n\tkernel /install.amd/vmlinuz\n\tappend vga=788 initrd=/install.amd/initrd.gz --- quiet\n';
  assert.deepEqual(bootFilesFromConfig(txt), { kernel: '/install.amd/vmlinuz', initrd: '/install.amd/initrd.gz' });
});

test('the kernel and initrd named by a GRUB configuration, relative paths made absolute', () => {
  const grub = "menuentry 'Install' {\n    linux    install.a64/vmlinuz --- quiet\n    initrd   install.a64/initrd.gz\n}\n";
  assert.deepEqual(bootFilesFromConfig(grub), { kernel: '/install.a64/vmlinuz', initrd: '/install.a64/initrd.gz' });
  assert.equal(bootFilesFromConfig('set timeout=5\n'), undefined);
});

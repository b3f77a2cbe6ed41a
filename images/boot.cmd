# Tern A/B boot script: boot.cmd -> boot.scr, run by Debian U-Boot's distro_bootcmd.
#
# The shared environment lives in two raw 16 KiB copies on the disk (fixed-size
# files on the boot partition, never rewritten through FAT), in U-Boot's
# redundant format: CRC32 (LE) | flag byte | "k=v\0...\0\0". We import the valid
# copy with the newer flag and write changes to the other copy with flag + 1,
# so a torn write never loses the last complete environment. libubootenv's
# fw_setenv in Linux uses the same layout (/etc/fw_env.config).
#
# @ENV1_BLK@ and @ENV2_BLK@ (disk blocks of the copies) are filled in by images/build.py.

echo "== tern: A/B selection =="
setenv shared_vars "mender_boot_part mender_boot_part_hex upgrade_available bootcount bootlimit"
setenv env_buf 0x50040000
setenv env_data 0x50040005
setenv env_flag_addr 0x50040004
setenv env_crc 0x50030000
setenv env_export 0x50100000
setenv env_data_size 0x3ffb

# Sets env_valid (0/1) and env_flag for the copy in env_buf. crc32 stores its
# result big-endian, the environment stores it little-endian: compare bytewise.
setenv tern_check_copy 'crc32 ${env_data} ${env_data_size} ${env_crc}; if itest.b *0x50040000 == *0x50030003 && itest.b *0x50040001 == *0x50030002 && itest.b *0x50040002 == *0x50030001 && itest.b *0x50040003 == *0x50030000; then setenv env_valid 1; else setenv env_valid 0; fi; setexpr.b env_flag *${env_flag_addr}'

# Writes the shared variables to copy ${env_target_blk} with flag ${env_new_flag}.
setenv tern_save_env 'env export -b ${env_export} ${shared_vars}; cp.b ${env_export} ${env_data} ${env_data_size}; mw.b ${env_flag_addr} ${env_new_flag}; crc32 ${env_data} ${env_data_size} ${env_crc}; cp.b 0x50030003 0x50040000 1; cp.b 0x50030002 0x50040001 1; cp.b 0x50030001 0x50040002 1; cp.b 0x50030000 0x50040003 1; virtio write ${env_buf} ${env_target_blk} 0x20; echo "tern: wrote env copy at block ${env_target_blk} flag ${env_new_flag}"'

virtio dev 0
virtio read ${env_buf} @ENV1_BLK@ 0x20
run tern_check_copy
setenv valid1 ${env_valid}
setenv flag1 ${env_flag}
virtio read ${env_buf} @ENV2_BLK@ 0x20
run tern_check_copy
setenv valid2 ${env_valid}
setenv flag2 ${env_flag}

# U-Boot's rule: the valid copy with the newer flag (255 -> 0 wraps); copy 1 on a tie.
setenv env_current 0
if test ${valid1} = 1; then setenv env_current 1; fi
if test ${valid2} = 1; then
    setenv env_current 2
    if test ${valid1} = 1; then
        if itest ${flag1} == ff && itest ${flag2} == 0; then setenv env_current 2;
        elif itest ${flag2} == ff && itest ${flag1} == 0; then setenv env_current 1;
        elif itest ${flag1} >= ${flag2}; then setenv env_current 1; fi
    fi
fi
echo "tern: env copy1 valid=${valid1} flag=${flag1}, copy2 valid=${valid2} flag=${flag2}, using ${env_current}"

if test ${env_current} = 1; then
    virtio read ${env_buf} @ENV1_BLK@ 0x20
    env import -b ${env_data} ${env_data_size} ${shared_vars}
    setexpr env_new_flag ${flag1} + 1
    setenv env_target_blk @ENV2_BLK@
elif test ${env_current} = 2; then
    virtio read ${env_buf} @ENV2_BLK@ 0x20
    env import -b ${env_data} ${env_data_size} ${shared_vars}
    setexpr env_new_flag ${flag2} + 1
    setenv env_target_blk @ENV1_BLK@
else
    echo "tern: no valid environment copy, using defaults"
    setenv env_new_flag 1
    setenv env_target_blk @ENV1_BLK@
fi
if itest ${env_new_flag} == 100; then setenv env_new_flag 0; fi

env exists mender_boot_part || setenv mender_boot_part 2
env exists upgrade_available || setenv upgrade_available 0
env exists bootcount || setenv bootcount 0
env exists bootlimit || setenv bootlimit 1

if test ${upgrade_available} = 1; then
    setexpr bootcount ${bootcount} + 1
    if itest ${bootcount} > ${bootlimit}; then
        echo "tern: bootcount ${bootcount} > bootlimit ${bootlimit}: rollback"
        if test ${mender_boot_part} = 3; then setenv mender_boot_part 2; else setenv mender_boot_part 3; fi
        setenv upgrade_available 0
        setenv bootcount 0
    fi
    setenv mender_boot_part_hex ${mender_boot_part}
    run tern_save_env
fi

echo "tern: mender_boot_part=${mender_boot_part} upgrade_available=${upgrade_available} bootcount=${bootcount} bootlimit=${bootlimit}"
# fsck.repair=yes: systemd-fsck answers yes, as rcS does when preen gives up (a torn /data
# superblock): an unattended device has nobody to answer, and /data unmounted loses the
# updater's state.
setenv bootargs "console=ttyAMA0 root=/dev/vda${mender_boot_part} rootwait panic=3 quiet loglevel=3 fsck.repair=yes"
if load virtio 0:${mender_boot_part} ${kernel_addr_r} /boot/vmlinuz && load virtio 0:${mender_boot_part} ${ramdisk_addr_r} /boot/initrd.img; then
    booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdt_addr}
fi
echo "tern: boot of partition ${mender_boot_part} failed, resetting"
reset

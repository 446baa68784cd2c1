-- Deadlock: PostgreSQL breaks the cycle by aborting one transaction.
--
-- T1 and T2 lock rows 1 and 2 in opposite orders, so each waits for the
-- other. After deadlock_timeout the waiting backend runs the deadlock
-- detector and fails with 40P01; the other then gets its lock. T2 gets the
-- short timeout so that it is the one to give up (setting deadlock_timeout
-- needs a superuser; otherwise both wait the default 1 s and the first
-- waiter, T1, gives up instead).
create table test (id int primary key, value int);
insert into test (id, value) values (1, 10), (2, 20);

begin; set local deadlock_timeout = '10s'; -- T1
begin; set local deadlock_timeout = '100ms'; -- T2
update test set value = 11 where id = 1; -- T1
update test set value = 22 where id = 2; -- T2
update test set value = 21 where id = 2; -- T1, BLOCKS
update test set value = 12 where id = 1; -- T2, BLOCKS, then ERROR 40P01 deadlock detected
rollback; -- T2. T1 unblocks: UPDATE 1
commit; -- T1
select * from test order by id; -- T3. Shows 1 => 11, 2 => 21
